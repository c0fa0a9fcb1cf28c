"""``results/glue_submission/<model>/``: the GLUE test server's files of one model, checked
and zipped.

Every task run (teacher or student) writes ``predictions/<server_name>.tsv`` for each test
split its data source has (``kbert.evaluate.predict_test``). This module gathers one
model's files from its runs, checks each against the split's row count and label set
(``kbert.submission.check_server_file``), refuses the lot if any is wrong, and writes the
files with a ``submission.zip`` the server takes as it is.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from kbert.artifacts import atomic_path
from kbert.report.aggregate import find_metric_files
from kbert.submission import check_server_file
from kbert.tasks import get_task


def _run_files(run_dir: Path) -> dict[str, tuple]:
    """server file name -> (path, task spec, test split) for one run's predictions."""
    spec = get_task(json.loads((run_dir / "metrics.json").read_text())["task"])
    tests = {f"{t.server_name}.tsv": t for t in spec.test_splits}
    found = {}
    for path in sorted((run_dir / "predictions").glob("*.tsv")):
        if path.name not in tests:
            raise ValueError(f"{path}: not a test split of {spec.name} (expected one of {sorted(tests)})")
        found[path.name] = (path, spec, tests[path.name])
    return found


def write_submission(runs: list[str | Path], out_dir: str | Path) -> list[str]:
    """Check and copy one model's server files from ``runs`` (metrics.json files or run
    directories) into ``out_dir``, with ``submission.zip``; returns the file names. Raises
    ValueError listing every problem (a run without predictions, a file twice, wrong rows
    or labels) and writes nothing."""
    files, problems = {}, []
    for run_dir in (path.parent for path in find_metric_files(runs)):
        run_files = _run_files(run_dir)
        if not run_files:
            problems.append(f"{run_dir}: no predictions/*.tsv (was it run before test splits were predicted?)")
        for name, (path, spec, test) in run_files.items():
            if name in files:
                problems.append(f"{name}: in both {files[name]} and {path}")
            problems += [f"{path}: {p}" for p in check_server_file(path.read_text(), spec, test)]
            files[name] = path
    if problems:
        raise ValueError("GLUE submission refused:\n  " + "\n  ".join(problems))
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name, path in sorted(files.items()):
            shutil.copyfile(path, tmp / name)
        with zipfile.ZipFile(tmp / "submission.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(files):
                archive.write(tmp / name, arcname=name)
    return sorted(files)
