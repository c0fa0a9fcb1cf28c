"""Table 9 (out-of-distribution): OOD results go to results/ood.csv only, and the table shows
them next to the paper's numbers; sets without data are n/a cells with their reason."""

import copy
import json

import pandas as pd
import pytest

from kbert.report.aggregate import aggregate
from kbert.report.tables import write_tables

TEACHER = "all-MiniLM-L6-v2"
STUDENT = ("kroneckerbert_8", 14_654_216, 7.47, 5.475e9)
# (model, seed) -> MRPC (f1, acc) on validation and on PAWS.
VALIDATION = {("teacher", 0): (0.88, 0.80), ("kroneckerbert_8", 0): (0.80, 0.70), ("kroneckerbert_8", 1): (0.84, 0.74)}
PAWS = {("teacher", 0): (0.50, 0.60), ("kroneckerbert_8", 0): (0.40, 0.55), ("kroneckerbert_8", 1): (0.44, 0.57)}
OFFLINE = [{"task": "mrpc", "eval_split": "paws", "reason": "no offline copy of PAWS"},
           {"task": "sst2", "eval_split": "imdb", "reason": "no offline copy of IMDb"},
           {"task": "rte", "eval_split": "hans", "reason": "no offline copy of HANS"}]


def record(model, seed, eval_split, scores):
    teacher = model == "teacher"
    params, cf, flops = (22_700_000, 1.0, 2.9e9) if teacher else STUDENT[1:]
    return {"task": "mrpc", "model": model, "family": "teacher" if teacher else "kronecker",
            "variant": "teacher" if teacher else "full", "augment": False, "teacher": TEACHER, "seed": seed,
            "params": params, "compression_factor": cf, "flops": flops,
            "results": [{"eval_split": eval_split, "data_status": "full", "n_examples": 8000 if eval_split == "paws" else 408,
                         "metrics": dict(zip(("mrpc_f1", "mrpc_acc"), scores)), "score": sum(scores) / 2}],
            "provenance": {"git_commit": "abc", "config_hash": "cfg", "teacher_hash": "t", "data_sha256": "d",
                           "preset": "test", "wall_time_s": 1.0}}


def write_runs(root, with_paws: bool):
    records = [record(m, s, "validation", v) for (m, s), v in VALIDATION.items()]
    if with_paws:
        records += [record(m, s, "paws", v) for (m, s), v in PAWS.items()]
    for i, rec in enumerate(records):
        (root / f"run{i}").mkdir(parents=True)
        (root / f"run{i}" / "metrics.json").write_text(json.dumps(rec))
    return root


@pytest.fixture(scope="module")
def hub_results(tmp_path_factory):
    """PAWS evaluated; IMDb and HANS not (their source tasks are not run)."""
    root = tmp_path_factory.mktemp("ood")
    unavailable = [{"task": "sst2", "eval_split": "imdb", "reason": "sst2 is not run in this preset"},
                   {"task": "rte", "eval_split": "hans", "reason": "rte is not run in this preset"}]
    aggregate([write_runs(root / "runs", with_paws=True)], root / "results", unavailable=unavailable)
    write_tables(root / "results")
    return root / "results"


def test_ood_rows_go_to_ood_csv_only(hub_results):
    for name in ("glue", "teacher", "glue_summary", "teacher_summary", "retention"):
        frame = pd.read_csv(hub_results / f"{name}.csv")
        assert not frame["eval_split"].isin(["paws", "imdb", "hans"]).any(), name
    ood = pd.read_csv(hub_results / "ood_summary.csv")
    paws = ood[ood["eval_split"] == "paws"].set_index("model")
    assert paws.loc["kroneckerbert_8", "mrpc_acc_mean"] == pytest.approx(0.56)
    assert paws.loc["teacher", "n"] == 1 and paws.loc["kroneckerbert_8", "n"] == 2
    unavailable = ood[ood["data_status"] == "unavailable"]
    assert set(zip(unavailable["model"], unavailable["eval_split"])) == {
        (m, split) for m in ("teacher", "kroneckerbert_8") for split in ("imdb", "hans")}


def test_table9_shows_ours_next_to_the_paper(hub_results):
    table = (hub_results / "tables" / "table9_ood.md").read_text()
    assert "| KroneckerBERT_8 | paper: KroneckerBERT Table 9 | 61.4 | 86.5 | 50.4 |" in table
    assert "| BERT_BASE (teacher) | paper: KroneckerBERT Table 9 | 61.3 | 88.0 | 50.7 |" in table
    student = next(line for line in table.splitlines() if line.startswith("| kroneckerbert_8 (full) | ours"))
    assert "| 56.0 ± 1.4 | n/a (sst2 is not run in this preset) | n/a (rte is not run in this preset) |" in student
    teacher = next(line for line in table.splitlines() if line.startswith(f"| {TEACHER} (teacher) | ours"))
    assert "| 60.0 | n/a" in teacher
    # Table 4/7 (GLUE dev) still reads MRPC from validation: F1 82.0, never PAWS's 42.0.
    dev = (hub_results / "tables" / "table4_7_glue_dev.md").read_text()
    assert "82.0 ± 2.8" in dev and "42.0" not in dev
    assert (hub_results / "tables" / "table9_ood.tex").exists()


def test_offline_table9_marks_every_set_unavailable(tmp_path):
    aggregate([write_runs(tmp_path / "runs", with_paws=False)], tmp_path / "results",
              unavailable=["qqp", *copy.deepcopy(OFFLINE)])
    write_tables(tmp_path / "results")
    table = (tmp_path / "results" / "tables" / "table9_ood.md").read_text()
    student = next(line for line in table.splitlines() if line.startswith("| kroneckerbert_8 (full) | ours"))
    assert ("| n/a (no offline copy of PAWS) | n/a (no offline copy of IMDb) | n/a (no offline copy of HANS) |"
            in student)
    assert "61.4" in table                                   # the paper's numbers stay
    glue = pd.read_csv(tmp_path / "results" / "glue.csv")
    assert set(glue.loc[glue["task"] == "qqp", "data_status"]) == {"unavailable"}   # a whole task, as before
