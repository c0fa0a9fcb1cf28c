"""The whole smoke DAG end to end in a scratch directory: every stage for real, tiny sizes.

Checks what a user inspects: one CSV row per expected (model, variant, task, seed,
split) with the metric columns, non-empty tables and figures, and that a second run
has nothing to do.
"""

import pandas as pd
import pytest
import yaml

from test_workflow_dryrun import REPO, run_workflow

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    proc = run_workflow(workdir, "config/smoke.yaml", dryrun=False, cores=2, timeout=900)
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
    expected = {(s, "full", t, 0) for s in config["students"] for t in ("mrpc", "stsb")}
    expected |= {(s, v, "mrpc", 0) for s in config["students"] for v in ("full_aug", "no_general_kd", "no_task_kd")}
    assert keys == expected
    assert not students.duplicated(["model", "variant", "task", "seed", "eval_split"]).any()
    assert students["score"].notna().all()
    assert set(glue.loc[glue["family"] == "teacher", "task"]) == {"mrpc", "stsb"}


def test_squad_rows(smoke_run):
    _, config, results, _ = smoke_run
    squad = pd.read_csv(results / "squad.csv")
    assert {"squad_v1_em", "squad_v1_f1"} <= set(squad.columns)
    students = squad[squad["family"] == "kronecker"]
    assert set(students["model"]) == set(config["students"])


def test_tables_and_figures_exist(smoke_run):
    _, _, results, figures = smoke_run
    tables = list((results / "tables").glob("*.md"))
    assert tables and all(t.stat().st_size > 0 for t in tables)
    assert list((results / "tables").glob("*.tex"))
    pngs = list(figures.glob("*.png"))
    assert pngs and all(p.stat().st_size > 0 for p in pngs)
    assert (results / "efficiency.csv").exists()


def test_second_run_has_nothing_to_do(smoke_run):
    workdir, _, _, _ = smoke_run
    proc = run_workflow(workdir, "config/smoke.yaml", dryrun=True)
    assert proc.returncode == 0, proc.out[-3000:]
    assert "Nothing to be done" in proc.out
