"""Compare every results CSV of two runs (e.g. the smoke DAG before and after a refactoring).

    python workflow/scripts/compare_results.py OLD_RESULTS NEW_RESULTS [--rtol 1e-6]

Each ``*.csv`` under either directory (recursively) is matched by its relative path. Numeric
columns must agree within ``--rtol`` (relative; values that are both missing agree), the
others exactly. Columns that differ between any two runs by nature (provenance: git commit,
config hash; timing: wall time, benchmark latencies and what is derived from them, the
machine description) are left out of the verdict by ``--ignore`` (regular expressions,
full match) but still listed when they differ. Prints one line per difference; exits 1 if
there is one outside the ignored columns, 0 otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

IGNORED = [
    "git_commit", "config_hash", "wall_time_s",                      # provenance
    "env", r".*_ms_.*", r"throughput_.*", r".*speedup", r".*fraction_of_bound",   # benchmark timing
]


def column_difference(old: pd.Series, new: pd.Series, rtol: float) -> str | None:
    """How one column differs ("3 rows, max rel 2e-3: 0.41 -> 0.42"), or None if it agrees."""
    if pd.api.types.is_numeric_dtype(old) and pd.api.types.is_numeric_dtype(new):
        a, b = old.to_numpy(float), new.to_numpy(float)
        same = np.isclose(a, b, rtol=rtol, atol=0.0, equal_nan=True)
        if same.all():
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(a - b) / np.maximum(np.abs(a), np.abs(b))
        detail = f"max rel {np.nanmax(np.where(same, 0, rel)):.3g}"
    else:
        same = np.array([_text(a) == _text(b) for a, b in zip(old, new)])
        if same.all():
            return None
        detail = "text"
    first = int(np.flatnonzero(~same)[0])
    return f"{(~same).sum()} of {len(same)} rows, {detail}; row {first}: {_text(old.iloc[first])} -> {_text(new.iloc[first])}"


def _text(value) -> str:
    """A cell as text; every kind of missing value (NaN, None, pandas NA) reads the same."""
    return "<missing>" if pd.isna(value) else str(value)


def compare_csv(old_path: Path, new_path: Path, rtol: float) -> list[tuple[str, str]]:
    """(column, how it differs) for one CSV; column "*" for the table's shape."""
    old, new = pd.read_csv(old_path), pd.read_csv(new_path)
    diffs = [("*", f"column {c!r} only in {which}") for which, only in
             (("old", old.columns.difference(new.columns)), ("new", new.columns.difference(old.columns)))
             for c in only]
    if len(old) != len(new):
        return diffs + [("*", f"{len(old)} rows -> {len(new)} rows")]
    for column in old.columns.intersection(new.columns, sort=False):
        how = column_difference(old[column], new[column], rtol)
        if how:
            diffs.append((column, how))
    return diffs


def compare_dirs(old_dir: Path, new_dir: Path, rtol: float) -> list[tuple[str, str, str]]:
    """(file, column, how it differs) for every CSV under either directory."""
    names = sorted({p.relative_to(d).as_posix() for d in (old_dir, new_dir) for p in d.rglob("*.csv")})
    diffs = []
    for name in names:
        missing = [which for which, d in (("old", old_dir), ("new", new_dir)) if not (d / name).exists()]
        if missing:
            diffs.append((name, "*", f"missing in {missing[0]}"))
            continue
        diffs += [(name, column, how) for column, how in compare_csv(old_dir / name, new_dir / name, rtol)]
    return diffs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="results directory of the reference run")
    parser.add_argument("new", type=Path, help="results directory of the run to check")
    parser.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance of numeric columns (default 1e-6)")
    parser.add_argument("--ignore", nargs="*", default=IGNORED,
                        help="columns (regular expressions) outside the verdict; default: provenance and timing")
    args = parser.parse_args(argv)
    for d in (args.old, args.new):
        if not d.is_dir():
            parser.error(f"{d} is not a directory")
    if args.rtol < 0:
        parser.error(f"--rtol {args.rtol}: use a tolerance of 0 or more")
    ignored = [re.compile(p) for p in args.ignore]

    diffs = compare_dirs(args.old, args.new, args.rtol)
    failing = 0
    for name, column, how in diffs:
        skip = any(p.fullmatch(column) for p in ignored)
        failing += not skip
        print(f"{'ignored' if skip else 'DIFFERS'}  {name}  {column}: {how}")
    print(f"{failing} difference(s) outside the ignored columns (rtol {args.rtol:g})")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
