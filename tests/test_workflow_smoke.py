"""The whole smoke DAG end to end in a scratch directory: every stage for real, tiny sizes.

Checks what a user inspects: one CSV row per expected (model, variant, task, seed,
split) with the metric columns, non-empty tables and figures, and that a second run
has nothing to do.
"""

import pandas as pd
import pytest
import yaml

from kbert.config import load_config
from helpers import REPO, resolved_path, run_workflow

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    proc = run_workflow(workdir, "config/smoke.yaml", targets=("all", "equal_size"), dryrun=False, cores=2,
                        timeout=900)
    assert proc.returncode == 0, proc.out[-5000:]
    config = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    return workdir, config, workdir / config["paths"]["results"], workdir / config["paths"]["figures"]


def test_glue_rows_and_columns(smoke_run):
    _, config, results, _ = smoke_run
    glue = pd.read_csv(results / "glue.csv")
    for column in ("model", "variant", "task", "seed", "eval_split", "data_status", "score", "params",
                   "compression_factor", "flops", "mrpc_f1", "mrpc_acc", "stsb_pearson", "stsb_spearman",
                   "git_commit", "config_hash", "teacher_hash", "data_sha256", "wall_time_s"):
        assert column in glue.columns, column
    students = glue[glue["family"] == "kronecker"]
    keys = set(zip(students["model"], students["variant"], students["task"], students["seed"]))
    kronecker = [s for s, spec in config["students"].items() if spec["family"] == "kronecker"]
    expected = {(s, "full", t, 0) for s in kronecker for t in ("mrpc", "stsb")}
    expected |= {(s, v, "mrpc", 0) for s in kronecker for v in ("full_aug", "no_general_kd", "no_task_kd")}
    assert keys == expected
    assert not students.duplicated(["model", "variant", "task", "seed", "eval_split"]).any()
    assert students["score"].notna().all()
    assert set(glue.loc[glue["family"] == "teacher", "task"]) == {"mrpc", "stsb"}


def test_squad_rows(smoke_run):
    _, config, results, _ = smoke_run
    squad = pd.read_csv(results / "squad.csv")
    assert {"squad_v1_em", "squad_v1_f1"} <= set(squad.columns)
    students = squad[squad["family"] == "kronecker"]
    assert set(students["model"]) == {s for s, spec in config["students"].items() if spec["family"] == "kronecker"}


def test_tables_and_figures_exist(smoke_run):
    _, _, results, figures = smoke_run
    tables = list((results / "tables").glob("*.md"))
    assert tables and all(t.stat().st_size > 0 for t in tables)
    assert list((results / "tables").glob("*.tex"))
    # Table 9 offline: the smoke preset's MRPC models, PAWS n/a; IMDb and HANS's tasks are not run.
    table9 = (results / "tables" / "table9_ood.md").read_text()
    assert "n/a (no offline copy of PAWS)" in table9 and "n/a (rte is not run in this preset)" in table9
    pngs = list(figures.glob("*.png"))
    assert pngs and all(p.stat().st_size > 0 for p in pngs)
    assert (results / "efficiency.csv").exists()


def test_equal_size_outputs(smoke_run):
    """One row per (student, task, seed) of the sweep, all three families, table and figure."""
    _, config, results, _ = smoke_run
    out = results / "equal_size"
    runs = pd.read_csv(out / "runs.csv")
    students = runs[runs["family"] != "teacher"]
    sweep = config["equal_size"]
    expected = {(s, "full", t, seed) for s in ["kron_4", *sweep["students"]] for t in sweep["tasks"]
                for seed in sweep["per_task_seeds"].get(t, sweep["seeds"])}
    expected |= {(s, "no_general_kd", t, seed) for s in ["kron_4", *sweep["students"]] for t in sweep["tasks"]
                 for seed in sweep["no_general_kd_seeds"]}
    assert set(zip(students["model"], students["variant"], students["task"], students["seed"])) == expected
    # The start of task KD: one score per (student, variant, task), on the main split.
    start = pd.read_csv(out / "start.csv")
    assert sorted(zip(start["model"], start["variant"], start["task"])) == sorted(
        {(s, v, t) for s, v, t, _ in expected})
    assert start["score"].notna().all()
    assert set(students["family"]) == {"kronecker", "lowrank", "dense"}
    assert set(students["budget"]) == {"kron_4"}
    # Equal size: every family within 5% of the Kronecker student's parameter count.
    params = students.groupby("family")["params"].first()
    assert (abs(params / params["kronecker"] - 1) <= 0.05).all(), params
    summary = pd.read_csv(out / "summary.csv")
    mrpc = summary[(summary["task"] == "mrpc") & (summary["family"] != "teacher")]
    seeds = {variant: set(rows["n"]) for variant, rows in mrpc.groupby("variant")}
    assert seeds == {"full": {3}, "no_general_kd": {1}}  # verdicts read the full runs only
    assert {"score_mean", "score_sd", "score_median"} <= set(summary.columns)
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert len(verdicts) == 2 * len(sweep["tasks"])
    assert set(verdicts["winner"]) <= {"kronecker", "dense", "lowrank", "overlap", "one seed"}
    # MRPC has a majority-class score (always "equivalent"), STS-B none (regression).
    assert summary.loc[summary["task"] == "mrpc", "majority"].between(0.5, 1).all()
    assert summary.loc[summary["task"] == "stsb", "majority"].isna().all()
    table = (out / "equal_size.md").read_text()
    assert "Kronecker vs Dense (TinyBERT-style): Kronecker wins" in table and "| Majority |" in table
    for name in ("equal_size.tex", "equal_size.png", "equal_size.pdf", "speed.md", "speed.png"):
        assert (out / name).stat().st_size > 0
    init = pd.read_csv(out / "init_error.csv").set_index("family")
    assert set(init.index) == {"kronecker", "lowrank", "dense"} and init.loc["kronecker", "error_all"] > 0
    assert "Initialisation error" in table
    assert "score at the start and the end of task KD, with and without general KD" in table
    # Speed at equal size: every family at both budgets of both teacher configs, one run.
    speed = pd.read_csv(out / "speed.csv")
    assert set(speed["config"]) == {"bert-base-uncased", "all-MiniLM-L6-v2"}
    for _, rows in speed.groupby("config"):
        assert sorted(rows["family"]) == sorted(["teacher"] + ["kronecker", "lowrank", "dense"] * 2)


def test_second_run_has_nothing_to_do(smoke_run):
    workdir, _, _, _ = smoke_run
    proc = run_workflow(workdir, "config/smoke.yaml", targets=("all", "equal_size"), dryrun=True)
    assert proc.returncode == 0, proc.out[-3000:]
    assert "Nothing to be done" in proc.out


def test_real_run_wrote_its_resolved_config(smoke_run):
    """The run's jobs read the resolved config of the run's own hash."""
    workdir, _, _, _ = smoke_run
    assert load_config(workdir / resolved_path("config/smoke.yaml")) == load_config(REPO / "config" / "smoke.yaml")


def test_unrelated_config_change_reruns_nothing(smoke_run):
    """A new config hash (a new resolved file name) alone reruns no job."""
    workdir, config, _, _ = smoke_run
    other = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    other["resources"] = {**other.get("resources", {}), "runtime": 61}
    (workdir / "other.yaml").write_text(yaml.safe_dump(other))
    proc = run_workflow(workdir, workdir / "other.yaml", targets=("all", "equal_size"), dryrun=True)
    assert proc.returncode == 0, proc.out[-3000:]
    assert "Nothing to be done" in proc.out
