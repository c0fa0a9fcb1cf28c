"""python -m kbert.report job-times: Snakemake benchmark files -> job time and peak memory."""

from __future__ import annotations

import pandas as pd
import pytest

from kbert.report.__main__ import main
from kbert.report.job_times import read_benchmarks

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, *lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(line + "\n" for line in lines))


def test_job_times_sum_jobs_and_find_the_peak(tmp_path, capsys):
    root = tmp_path / "benchmarks"
    _bench(root / "task_kd" / "kb8" / "full" / "mrpc" / "seed0.tsv", "274.06\t0:04:34\t2246.52\t4351.77\t1\t1\t1\t1\t179.55\t492.7")
    # a rerun appended a second line: the last one measured the output that exists
    _bench(root / "task_kd" / "kb8" / "full" / "sst2" / "seed0.tsv",
           "900.0\t0:15:00\t100.0\t1\t1\t1\t1\t1\t50\t450", "77.98\t0:01:17\t1409.39\t3439.61\t1\t1\t1\t1\t182.05\t142.6")
    _bench(root / "bench_models.tsv", "406.81\t0:06:46\t9201.30\t10018.57\t1\t1\t1\t1\t178.08\t725.1")
    out = tmp_path / "job_times.csv"
    assert main(["job-times", "--benchmarks", str(root), "--out", str(out)]) == 0
    jobs = pd.read_csv(out, keep_default_na=False)
    assert sorted(zip(jobs["rule"], jobs["job"])) == [
        ("bench_models", ""), ("task_kd", "kb8/full/mrpc/seed0"), ("task_kd", "kb8/full/sst2/seed0")]
    assert jobs["seconds"].sum() == pytest.approx(274.06 + 77.98 + 406.81)
    printed = capsys.readouterr().out
    assert "job time: 759 s = 0.21 h over 3 jobs" in printed
    assert "largest max RSS: 9,201 MB = 8.99 GiB (bench_models)" in printed


def test_job_times_refuse_an_empty_folder_and_a_foreign_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Snakemake benchmark files"):
        read_benchmarks(tmp_path)
    (tmp_path / "notes.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="not a Snakemake benchmark file"):
        read_benchmarks(tmp_path)
