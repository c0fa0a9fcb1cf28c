"""GLUE test-server files: one ``<server_name>.tsv`` per test split, ``index<TAB>prediction``.

The format (https://gluebenchmark.com/faq, and the files HF ``run_glue`` writes): a header
line ``index	prediction``, then one row per test example in the split's order, its ``idx``
and the prediction as the split's ``server_format`` says: the label's name for the NLI
tasks (MNLI, QNLI, RTE, AX), its id for the others, a float for STS-B. The server scores a
zip of every file; ``check_server_file`` is what we check before zipping, so a file with
the wrong rows or labels is refused here rather than by the server.

Pure Python: the torch side (``kbert.evaluate``) writes the files, ``kbert.report``
checks and zips them.
"""

from __future__ import annotations

import math

from kbert.tasks import TaskSpec, TestSplit

HEADER = "index\tprediction"


def format_prediction(value, spec: TaskSpec, test: TestSplit) -> str:
    """One prediction as the server reads it: a label id, its name, or a float."""
    if test.server_format == "float":
        return f"{float(value):.4f}"
    label = int(value)
    return spec.label_names[label] if test.server_format == "name" else str(label)


def server_file(indices, predictions, spec: TaskSpec, test: TestSplit) -> str:
    """The text of ``<test.server_name>.tsv`` for aligned ``indices`` and ``predictions``."""
    if len(indices) != len(predictions):
        raise ValueError(f"{test.server_name}: {len(indices)} indices but {len(predictions)} predictions")
    lines = [HEADER] + [f"{int(i)}\t{format_prediction(p, spec, test)}" for i, p in zip(indices, predictions)]
    return "\n".join(lines) + "\n"


def allowed_predictions(spec: TaskSpec, test: TestSplit) -> set[str] | None:
    """The prediction strings the server accepts (None: any finite float)."""
    if test.server_format == "float":
        return None
    if test.server_format == "name":
        return set(spec.label_names)
    return {str(i) for i in range(len(spec.label_names))}


def check_server_file(text: str, spec: TaskSpec, test: TestSplit) -> list[str]:
    """What is wrong with a server file (empty: nothing): header, row count, indices
    0..size-1 each once, every prediction in the allowed set."""
    lines = text.rstrip("\n").split("\n")
    name = f"{test.server_name}.tsv"
    if lines[0] != HEADER:
        return [f"{name}: header {lines[0]!r}, expected {HEADER!r}"]
    rows = [line.split("\t") for line in lines[1:]]
    problems = []
    if len(rows) != test.size:
        problems.append(f"{name}: {len(rows)} rows, the server expects {test.size}")
    if any(len(r) != 2 for r in rows):
        return problems + [f"{name}: every row must be index<TAB>prediction"]
    indices = [r[0] for r in rows]
    if sorted(indices, key=lambda i: int(i) if i.isdigit() else -1) != [str(i) for i in range(len(rows))]:
        problems.append(f"{name}: indices must be 0..{len(rows) - 1}, each once")
    allowed = allowed_predictions(spec, test)
    bad = sorted({r[1] for r in rows if not _is_allowed(r[1], allowed)})
    if bad:
        expected = "a finite float" if allowed is None else sorted(allowed)
        problems.append(f"{name}: predictions {bad[:5]} not in {expected}")
    return problems


def _is_allowed(value: str, allowed: set[str] | None) -> bool:
    if allowed is not None:
        return value in allowed
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False
