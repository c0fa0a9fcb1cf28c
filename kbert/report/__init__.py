"""The report: results CSVs, the paper's tables and the figures, from stage outputs.

Reads ``metrics.json`` and ``results/*.csv`` only, never a model (no torch):

- :mod:`~kbert.report.aggregate`: every ``metrics.json`` into ``results/*.csv``;
- :mod:`~kbert.report.retention_csv`: ``retention.csv`` (raw, margin, paper-way);
- :mod:`~kbert.report.tables` and :mod:`~kbert.report.render`: the paper's tables
  regenerated next to its printed numbers (:mod:`~kbert.report.published`), as
  Markdown and LaTeX;
- :mod:`~kbert.report.figures`: the figures, as PNG and PDF;
- :mod:`~kbert.report.equal_size`: the equal-size comparison (``results/equal_size/``).

Entry points: ``python -m kbert.cli aggregate|report|equal-size`` (what the rules call)
and ``python -m kbert.report aggregate|retention|report``.
"""
