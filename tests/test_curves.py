"""Teacher learning curves: the table and figure from teacher runs, and the recipe's cap."""

import json

import pandas as pd
import pytest

from kbert.config import load_config
from kbert.curves import write


def _teacher(path, rows, score, minutes):
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({
        "task": "sst2", "model": "teacher", "family": "teacher", "variant": "teacher", "train_examples": rows,
        "results": [{"eval_split": "validation", "data_status": "full", "n_examples": 872, "score": score,
                     "metrics": {"sst2_acc": score}}],
        "provenance": {"preset": "ladder", "wall_time_s": 60 * minutes},
    }))


def test_learning_curve_table_from_runs(tmp_path):
    config = load_config("config/ladder.yaml")
    _teacher(tmp_path / "runs" / "n4000", 4000, 0.847, 4.5)
    _teacher(tmp_path / "runs" / "n1000", 1000, 0.80, 1.25)
    frame = write([tmp_path / "runs"], tmp_path / "out", config)
    assert list(frame["train_examples"]) == [1000, 4000]
    assert frame["majority"].iloc[0] == pytest.approx(0.5, abs=0.05)   # SST-2 dev: about half positive
    table = (tmp_path / "out" / "curve.md").read_text()
    assert "| 4,000 | 84.7 | 4.5 |" in table and "majority class" in table
    assert (tmp_path / "out" / "curve.png").exists()
    assert pd.read_csv(tmp_path / "out" / "curve.csv")["minutes"].tolist() == [1.25, 4.5]


def test_learning_curve_shows_the_key_metrics_a_score_averages(tmp_path):
    """SQuAD's key score is the mean of EM and F1: the table and the CSV show both."""
    run = tmp_path / "runs" / "squad_v1" / "n4000"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "task": "squad_v1", "model": "teacher", "train_examples": 4057,
        "results": [{"eval_split": "validation", "n_examples": 1000, "score": 0.557,
                     "metrics": {"squad_v1_em": 0.488, "squad_v1_f1": 0.626}}],
        "provenance": {"wall_time_s": 2079.0}}))
    frame = write([tmp_path / "runs"], tmp_path / "out", load_config("config/ladder.yaml"))
    assert frame[["squad_v1_em", "squad_v1_f1"]].iloc[0].tolist() == [0.488, 0.626]
    assert "| 4,057 | 55.7 (EM 48.8, F1 62.6) | 34.6 |" in (tmp_path / "out" / "curve.md").read_text()


def test_learning_curve_tasks_must_be_configured():
    import yaml

    from kbert.config import ConfigError

    raw = yaml.safe_load(open("config/ladder.yaml"))
    raw["learning_curve"]["tasks"] = ["wnli"]
    with pytest.raises(ConfigError, match=r"learning_curve.tasks\[0\]: 'wnli' is not in config.tasks"):
        load_config(raw)
