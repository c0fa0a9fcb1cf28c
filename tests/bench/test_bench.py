"""The benchmarks run in seconds on a tiny setting and write well-formed CSV (no timing assertions)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from kbert.bench import COLUMNS
from kbert.bench import __main__ as bench_main
from kbert.bench.timing import interleaved, iqr, paired_ratio, summary


def _numeric(frame: pd.DataFrame, columns: list[str]) -> None:
    for column in columns:
        values = pd.to_numeric(frame[column])
        assert values.notna().all() and values.map(math.isfinite).all(), column


def test_layers_quick_writes_csv(tmp_path):
    from kbert.bench import layers

    out = tmp_path / "efficiency_layers.csv"
    layers.main(["--quick", "--threads", "1", "--tokens", "64", "--baseline", "--out", str(out)])
    frame = pd.read_csv(out)
    assert list(frame.columns[: len(COLUMNS)]) == COLUMNS
    assert set(frame.benchmark) == {"layers"}
    assert set(frame.subject) == {f"{p}/{m}" for p in ("kroneckerbert_8", "kroneckerbert_21") for m in ("attention", "ffn_w1", "ffn_w2")}
    _numeric(frame, ["params", "flops", "latency_ms_median", "speedup", "flop_bound", "fraction_of_bound",
                     "dense_ms_median", "kron_ms_median", "train_dense_ms_median", "train_kron_ms_median",
                     "train_speedup", "baseline_ms_median"])
    assert (frame.batch == 64).all() and (frame.threads == 1).all()
    pd.testing.assert_series_equal(frame.fraction_of_bound, frame.speedup / frame.flop_bound, check_names=False)
    bounds = dict(zip(frame.subject, frame.flop_bound.round(2)))
    assert bounds["kroneckerbert_8/attention"] == 1.99 and bounds["kroneckerbert_21/ffn_w1"] == 15.52
    assert set(frame.plan) <= {"b_planar", "b_mid", "a_mid", "a_planar"}


def test_models_quick_writes_csv_and_keeps_other_rows(tmp_path):
    from kbert.bench import models

    out = tmp_path / "efficiency.csv"
    pd.DataFrame([{"benchmark": "augment", "subject": "mlm", "speedup": 3.0}]).to_csv(out, index=False)
    models.main(["--quick", "--threads", "1", "--out", str(out)])
    frame = pd.read_csv(out)
    assert set(COLUMNS) <= set(frame.columns)
    assert (frame.benchmark == "augment").sum() == 1  # another benchmark's rows survive
    rows = frame[frame.benchmark == "models"]
    assert list(rows.subject) == ["dense", "kron_a", "kron_b"]
    _numeric(rows, ["params", "flops", "latency_ms_median", "latency_ms_iqr", "throughput_median", "speedup",
                    "flop_bound", "fraction_of_bound", "train_step_ms_median", "train_speedup"])
    dense = rows[rows.subject == "dense"].iloc[0]
    assert dense.speedup == 1.0 and dense.flop_bound == 1.0
    assert (rows.params.iloc[1:] < dense.params).all() and (rows.flops.iloc[1:] < dense.flops).all()
    # Re-running replaces the models rows instead of appending.
    models.main(["--quick", "--threads", "1", "--train-repeats", "0", "--out", str(out)])
    again = pd.read_csv(out)
    assert (again.benchmark == "models").sum() == 3 and (again.benchmark == "augment").sum() == 1


def test_dispatch(monkeypatch, capsys):
    assert bench_main.main(["--help"]) == 0
    assert bench_main.main([]) == 2
    assert bench_main.main(["nonsense"]) == 2
    seen = {}
    import kbert.bench.augment as augment

    monkeypatch.setattr(augment, "main", lambda argv: seen.setdefault("argv", argv))
    assert bench_main.main(["augment", "--sentences", "2"]) == 0
    assert seen["argv"] == ["--sentences", "2"]


def test_timing_helpers():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1,
                        clock=iter(range(100)).__next__)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then alternating order
    assert all(len(v) == 3 for v in times.values())
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == 3.0
    assert iqr([1.0]) == 0.0 and iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == 2.0
    stats = summary([0.001, 0.002, 0.003])
    assert stats["median"] == pytest.approx(2.0) and stats["n"] == 3


def test_config_sets_defaults(monkeypatch):
    import kbert.config
    from kbert.bench.timing import config_defaults

    config = {"bench": {"seq_len": 64, "batch": 8, "train_batch": 4, "repeats": 3, "warmup": 1, "threads": None},
              "resources": {"threads": 2, "per_rule": {"bench_models": {"threads": 1}}}}
    monkeypatch.setattr(kbert.config, "load_config", lambda path: config)
    assert config_defaults(["--config", "x.yaml", "--quick"], "bench_models") == {
        "seq_len": 64, "batch": 8, "train_batch": 4, "repeats": 3, "warmup": 1, "threads": 1}
    assert config_defaults(["--quick"], "bench_models") == {}


def test_training_quick_times_every_stage_in_both_precisions(tmp_path, monkeypatch):
    import kbert.device
    from kbert.bench import training

    monkeypatch.setattr(kbert.device, "cpu_has_bf16", lambda: True)  # emulated where the CPU lacks it: same code path
    out = tmp_path / "efficiency.csv"
    training.main(["--quick", "--threads", "1", "--device", "cpu", "--out", str(out)])
    frame = pd.read_csv(out)
    assert set(frame.benchmark) == {"training"}
    expected = {("teacher_finetune", "teacher")} | {(s, m) for s in ("general_kd", "task_kd") for m in ("kron_a", "kron_b")}
    assert set(zip(frame.stage, frame.model)) == expected
    assert (frame.groupby(["stage", "model"]).precision.apply(sorted) == pd.Series([["bf16", "fp32"]] * 5).values).all()
    _numeric(frame, ["params", "latency_ms_median", "steps_per_s", "speedup"])
    assert (frame[frame.precision == "fp32"].speedup == 1.0).all()


def test_training_bench_refuses_a_precision_the_machine_lacks(tmp_path, monkeypatch):
    import kbert.device
    from kbert.bench import training

    monkeypatch.setattr(kbert.device, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="precision 'bf16': cpu has no native bf16"):
        training.main(["--quick", "--device", "cpu", "--out", str(tmp_path / "e.csv")])
    assert not (tmp_path / "e.csv").exists()


def test_equal_size_quick_times_every_family_at_each_budget(tmp_path):
    """`python -m kbert.bench equal-size`: per budget the Kronecker student and its low-rank
    and dense twins (parameter counts within 5%), all against the one teacher; the report
    turns the rows into speed.csv, its table and its figure."""
    from kbert.bench import models
    from kbert.report.equal_size import write_speed
    from kbert.students import MATCH_TOLERANCE

    out = tmp_path / "speed.csv"
    assert bench_main.main(["equal-size", "--quick", "--threads", "1", "--train-repeats", "0", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert set(frame.benchmark) == {"equal_size"}
    assert list(frame.subject) == ["dense", "kron_a", "lowrank_a", "tinybert_a", "kron_b", "lowrank_b", "tinybert_b"]
    assert list(frame.family) == ["teacher"] + ["kronecker", "lowrank", "dense"] * 2
    for budget, rows in frame[frame.family != "teacher"].groupby("budget"):
        kron = rows[rows.family == "kronecker"].params.iloc[0]
        assert (abs(rows.params / kron - 1) <= MATCH_TOLERANCE).all(), budget
    _numeric(frame, ["latency_ms_median", "throughput_median", "speedup", "latency_speedup"])
    written = write_speed(out, tmp_path / "report")
    assert len(written) == 7
    table = (tmp_path / "report" / "speed.md").read_text()
    assert "| tinybert_a | Dense (TinyBERT-style) |" in table and "1 CPU thread" in table
    assert (tmp_path / "report" / "speed.png").exists()
    # The models benchmark keeps its own rows and subjects.
    assert [s for s, _ in models.tiny_group()[1]] == ["dense", "kron_a", "kron_b"]


def test_speed_rows_of_another_benchmark_are_refused(tmp_path):
    from kbert.report.equal_size import write_speed

    out = tmp_path / "efficiency.csv"
    pd.DataFrame([{"benchmark": "models", "subject": "dense"}]).to_csv(out, index=False)
    with pytest.raises(ValueError, match="no rows of benchmark 'equal_size'"):
        write_speed(out, tmp_path / "report")
