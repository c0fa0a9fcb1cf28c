"""Efficiency benchmarks: ``python -m kbert.bench layers|models|augment [args]``.

- ``layers``: every Table-1 matrix shape, dense ``nn.Linear`` vs ``KroneckerLinear``
  (inference and training), against the FLOP bound (``results/efficiency_layers.csv``).
- ``models``: dense teacher vs Kronecker students end to end: parameters, FLOPs, latency,
  throughput, training-step time (rows ``benchmark=models`` of ``results/efficiency.csv``).
- ``augment``: batched vs faithful TinyBERT augmentation (``kbert.bench.augment``).

Column contract: docs/architecture.md; method and measured numbers: docs/efficiency.md.
"""

COLUMNS = [
    "benchmark", "config", "subject", "params", "flops", "threads", "batch", "seq_len",
    "latency_ms_median", "latency_ms_iqr", "throughput_median", "speedup", "flop_bound",
    "fraction_of_bound", "notes",
]


def write_rows(rows: list[dict], extra_columns: list[str], out):
    """Replace this benchmark's rows in ``out`` (other benchmarks' rows are kept)."""
    import pandas as pd

    from kbert.artifacts import update_csv

    frame = pd.DataFrame(rows)
    frame = frame[[c for c in COLUMNS + extra_columns if c in frame.columns]]
    written = update_csv(out, frame.to_dict("records"), key="benchmark")
    print(f"wrote {len(rows)} rows to {out}")
    return written
