"""The sanity ladder's table: retention, margin retention, majority marks, init errors
(the retention functions' golden cases are in test_report.py)."""

import json
import math

import pandas as pd
import pytest

from kbert.config import load_config
from kbert.ladder import write


def _record(path, model, family, score, cf, params, variant="no_general_kd", seed=0):
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({
        "task": "mrpc", "model": model, "family": family, "variant": variant, "augment": False, "seed": seed,
        "params": params, "compression_factor": cf, "flops": 1,
        "results": [{"eval_split": "validation", "data_status": "full", "n_examples": 408, "score": score,
                     "metrics": {"mrpc_f1": score, "mrpc_acc": score}}],
        "provenance": {"preset": "ladder"},
    }))


def test_ladder_table_from_runs(tmp_path):
    config = load_config("config/ladder.yaml")
    runs = tmp_path / "runs"
    _record(runs / "teacher", "teacher", "teacher", 0.85, 1.0, 22_000_000, variant="teacher")
    _record(runs / "lossless", "lossless", "kronecker", 0.84, 1.0, 22_000_000)
    _record(runs / "kron", "kron_2_6", "kronecker", 0.748, 2.6, 8_500_000)
    (runs / "init").mkdir()
    (runs / "init" / "metrics.json").write_text(json.dumps(
        {"student": "kron_2_6", "stage": "compress", "relative_error_mean": 0.88}))
    frame = write([runs], tmp_path / "out", config)
    rows = frame.set_index("model")
    assert list(frame["model"]) == ["lossless", "kron_2_6"]          # by compression factor
    assert rows.loc["lossless", "retention_pct"] == pytest.approx(100 * 0.84 / 0.85)
    assert rows.loc["kron_2_6", "at_majority"] and not rows.loc["lossless", "at_majority"]
    assert rows.loc["kron_2_6", "margin_retention"] == pytest.approx(0.0, abs=0.01)
    assert rows.loc["kron_2_6", "init_error"] == 0.88
    assert math.isnan(rows.loc["lossless", "init_error"])
    table = (tmp_path / "out" / "ladder.md").read_text()
    assert "(at majority)" in table and "Kronecker_2.6" in table
    assert (tmp_path / "out" / "ladder.png").exists()
    assert pd.read_csv(tmp_path / "out" / "ladder.csv").shape[0] == 2


def test_a_rung_below_the_majority_class_is_marked(tmp_path):
    config = load_config("config/ladder.yaml")
    runs = tmp_path / "runs"
    _record(runs / "teacher", "teacher", "teacher", 0.85, 1.0, 22_000_000, variant="teacher")
    _record(runs / "kron", "kroneckerbert_8", "kronecker", 0.70, 7.5, 3_000_000)
    write([runs], tmp_path / "out", config)
    table = (tmp_path / "out" / "ladder.md").read_text()
    assert "70.0 (82%) (below majority)" in table and "408 dev examples" in table


def test_a_rung_with_several_seeds_shows_mean_sd_and_n(tmp_path):
    config = load_config("config/ladder.yaml")
    runs = tmp_path / "runs"
    _record(runs / "teacher", "teacher", "teacher", 0.85, 1.0, 22_000_000, variant="teacher")
    for seed, score in enumerate((0.80, 0.82)):
        _record(runs / f"s{seed}", "kroneckerbert_8", "kronecker", score, 7.5, 3_000_000, seed=seed)
    _record(runs / "low", "lowrank_8", "lowrank", 0.83, 7.5, 3_000_000)
    write([runs], tmp_path / "out", config)
    table = (tmp_path / "out" / "ladder.md").read_text()
    assert "81.0 ± 1.4 (n=2) (95%)" in table and "| 83.0 (98%) |" in table


def test_dose_response_table_from_runs(tmp_path):
    """ladder.dose_students: the no_general_kd run is the curve's 0, full_<k>ep its k; the
    dose variants stay out of the ladder table."""
    config = load_config("config/ladder.yaml")
    runs = tmp_path / "runs"
    _record(runs / "teacher", "teacher", "teacher", 0.85, 1.0, 22_000_000, variant="teacher")
    for variant, score in (("no_general_kd", 0.70), ("full_1ep", 0.76), ("full_3ep", 0.80)):
        _record(runs / variant, "kroneckerbert_8", "kronecker", score, 7.5, 3_000_000, variant=variant)
    for epochs, loss in ((1, 9.5), (3, 7.25)):
        (runs / f"general_{epochs}ep").mkdir()
        (runs / f"general_{epochs}ep" / "metrics.json").write_text(json.dumps(
            {"student": "kroneckerbert_8", "stage": "general_kd", "general_kd_epochs": epochs, "last_loss": loss}))
    ladder = write([runs], tmp_path / "out", config)
    assert list(ladder["variant"]) == ["no_general_kd"]
    dose = pd.read_csv(tmp_path / "out" / "dose.csv")
    assert list(dose["general_kd_epochs"]) == [0, 1, 3]
    assert list(dose["general_kd_last_loss"].fillna(-1)) == [-1, 9.5, 7.25]
    table = (tmp_path / "out" / "dose.md").read_text()
    assert "KroneckerBERT_8 on MRPC" in table and "7.25" in table and "(below majority)" in table
    assert (tmp_path / "out" / "dose.png").exists()


def test_dose_epochs_must_ascend():
    import yaml

    from kbert.config import ConfigError

    raw = yaml.safe_load(open("config/ladder.yaml"))
    raw["ladder"]["general_kd_epochs"] = [3, 1]
    with pytest.raises(ConfigError, match="must be ascending"):
        load_config(raw)
    raw["ladder"]["general_kd_epochs"] = [1]
    raw["ladder"]["dose_students"] = ["kroneckerbert_99"]
    with pytest.raises(ConfigError, match=r"ladder.dose_students\[0\]: unknown student"):
        load_config(raw)


def _dose(points, teacher=0.85, majority=0.75, task="mrpc"):
    """Dose rows (epochs, margin retention) of one student on one task."""
    return pd.DataFrame([{"task": task, "model": "kroneckerbert_8", "general_kd_epochs": e, "margin_retention": m,
                          "teacher": teacher, "majority": majority} for e, m in points])


def test_dose_projection_measured_projected_flat_and_excluded():
    from kbert.ladder import dose_projection

    # Reached at a measured point: no extrapolation.
    row = dose_projection(_dose([(0, 0.78), (1, 0.82), (3, 0.86)]), 0.8).iloc[0]
    assert row["reached_at"] == 1 and math.isnan(row["projected_epochs"])
    # On a line: +10 points of margin per doubling of (1 + epochs), 0.5 at 0 epochs -> 0.8 at 2**3 - 1 = 7.
    row = dose_projection(_dose([(0, 0.5), (1, 0.6), (3, 0.7)]), 0.8).iloc[0]
    assert math.isnan(row["reached_at"])
    assert row["slope_per_doubling"] == pytest.approx(0.1)
    assert row["projected_epochs"] == pytest.approx(7.0)
    # A curve that does not rise never gets there; two points are too few to say.
    assert math.isinf(dose_projection(_dose([(0, 0.3), (1, 0.2), (3, 0.3)]), 0.8).iloc[0]["projected_epochs"])
    assert math.isnan(dose_projection(_dose([(0, 0.3), (1, 0.5)]), 0.8).iloc[0]["projected_epochs"])
    # A teacher within 5 points of the majority class has no margin to project.
    assert dose_projection(_dose([(0, 0.1), (1, 0.2), (3, 0.3)], teacher=0.78), 0.8).empty


def test_dose_table_says_where_the_target_is_reached(tmp_path):
    config = load_config("config/ladder.yaml")
    runs = tmp_path / "runs"
    _record(runs / "teacher", "teacher", "teacher", 0.85, 1.0, 22_000_000, variant="teacher")
    for variant, score in (("no_general_kd", 0.70), ("full_1ep", 0.76), ("full_3ep", 0.80)):
        _record(runs / variant, "kroneckerbert_8", "kronecker", score, 7.5, 3_000_000, variant=variant)
    write([runs], tmp_path / "out", config)
    projection = pd.read_csv(tmp_path / "out" / "dose_projection.csv")
    assert list(projection["task"]) == ["mrpc"] and projection["target_margin"].iloc[0] == 0.8
    assert "an extrapolation, not a measurement" in (tmp_path / "out" / "dose.md").read_text()
