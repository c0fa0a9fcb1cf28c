"""Data: one loader over the bundled files and the hub, corpora, tokenisation, batching,
SQuAD windows. No module here knows a model; only ``batching`` imports torch.

Sources
    ``bundled``: the real files under ``data/`` (``data/PROVENANCE.md``), each verified
    against ``data/SHA256SUMS`` on first use in a process (:mod:`~kbert.data.files`).
    What each split is made of, and its status (full / subset / derived / unavailable),
    is in ``kbert.tasks``.
    ``hub``: ``datasets.load_dataset`` on the ids in ``kbert.tasks`` (paper preset). With
    ``KBERT_HUB_DIR`` (or ``hub_dir=``) set, the same call reads a local mirror laid out
    like the hub (``<dir>/nyu-mll/glue/README.md``, ``<dir>/nyu-mll/glue/mrpc/*.parquet``)
    (:mod:`~kbert.data.hub`).

Both sources give the hub schema (:mod:`~kbert.data.splits`): GLUE ``<text columns>,
label (ClassLabel or float32), idx``; SQuAD ``id, title, context, question,
answers{text, answer_start}``.

- :mod:`~kbert.data.task_data`: a stage's train and eval rows and training features;
- :mod:`~kbert.data.corpora`: documents for general distillation;
- :mod:`~kbert.data.glue`, :mod:`~kbert.data.squad`: tokenisation, SQuAD windows and
  post-processing (as Hugging Face ``run_qa.py`` / ``utils_qa.py``);
- :mod:`~kbert.data.batching`: length-bucketed padded batches.
"""
