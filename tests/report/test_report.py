"""kbert.report on synthetic runs: CSV layout, seed statistics, retention, tables, figures."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from kbert.report.aggregate import aggregate
from kbert.report.cells import our_cell, split_kind, split_tag
from kbert.report.figures import our_points, write_figures
from kbert.report.published import PAPER_GLUE_COLUMNS, column_spec, load_published, published_row
from kbert.report.retention_csv import retention_pct
from kbert.report.tables import LAYOUTS, score_table, write_tables

STUDENTS = {"kroneckerbert_8": (14_654_216, 7.47, 5.475e9),
            "kroneckerbert_21": (5_228_272, 20.9, 1.403e9)}
TEACHER = "all-MiniLM-L6-v2"      # the config's teacher name; the teacher's model is "teacher"
# (model, variant, task, seed) -> metrics; MRPC F1 of kroneckerbert_8 is the hand-worked case.
MRPC = {("kroneckerbert_8", "full", 0): (0.80, 0.70), ("kroneckerbert_8", "full", 1): (0.84, 0.74),
        ("kroneckerbert_21", "full", 0): (0.76, 0.66), ("kroneckerbert_21", "full", 1): (0.78, 0.68),
        ("kroneckerbert_8", "no_general_kd", 0): (0.60, 0.55),
        ("kroneckerbert_8", "no_general_kd", 1): (0.64, 0.57)}
SQUAD = {("kroneckerbert_8", "full", 0): (0.60, 0.70), ("kroneckerbert_8", "full", 1): (0.62, 0.72),
         ("kroneckerbert_21", "full", 0): (0.50, 0.60), ("kroneckerbert_21", "full", 1): (0.52, 0.62)}
TEACHER_MRPC = (0.88, 0.80)
TEACHER_SQUAD = (0.70, 0.80)
# majority.csv: MRPC's constant answer scores 0.70 (key score), SQuAD's "no answer" 0.
MAJORITY = pd.DataFrame({"task": ["mrpc", "mrpc", "mrpc", "squad_v1", "squad_v1", "squad_v1"],
                         "eval_split": ["validation"] * 6,
                         "metric": ["score", "mrpc_f1", "mrpc_acc", "score", "squad_v1_em",
                                    "squad_v1_f1"],
                         "majority": [0.70, 0.81, 0.59, 0.0, 0.0, 0.0]})


def metrics_json(model, family, variant, task, seed, metrics, params, cf, flops):
    return {"task": task, "model": model, "family": family, "variant": variant, "augment": False,
            "teacher": TEACHER if family == "teacher" else None,
            "seed": seed, "params": params, "compression_factor": cf, "flops": flops,
            "results": [{"eval_split": "validation", "data_status": "full", "n_examples": 408,
                         "metrics": metrics, "score": sum(metrics.values()) / len(metrics)}],
            "provenance": {"git_commit": "abc", "config_hash": "cfg", "teacher_hash": "t",
                           "data_sha256": "d", "preset": "test", "wall_time_s": 1.0}}


def write_runs(root):
    records = [metrics_json("teacher", "teacher", "teacher", "mrpc", 0,
                            dict(zip(("mrpc_f1", "mrpc_acc"), TEACHER_MRPC)), 22_700_000, 1.0, 2.9e9),
               metrics_json("teacher", "teacher", "teacher", "squad_v1", 0,
                            dict(zip(("squad_v1_em", "squad_v1_f1"), TEACHER_SQUAD)),
                            22_700_000, 1.0, 2.9e9)]
    for (model, variant, seed), (f1, acc) in MRPC.items():
        records.append(metrics_json(model, "kronecker", variant, "mrpc", seed,
                                    {"mrpc_f1": f1, "mrpc_acc": acc}, *STUDENTS[model]))
    for (model, variant, seed), (em, f1) in SQUAD.items():
        records.append(metrics_json(model, "kronecker", variant, "squad_v1", seed,
                                    {"squad_v1_em": em, "squad_v1_f1": f1}, *STUDENTS[model]))
    for i, record in enumerate(records):
        run = root / "runs" / f"run{i}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(record))
    compress = root / "runs" / "compress"          # a stage without results: skipped
    compress.mkdir()
    (compress / "metrics.json").write_text(json.dumps({"params": 1, "model": "x"}))


def write_efficiency(results):
    common = {"config": "test", "threads": 2, "batch": 8, "seq_len": 128, "latency_ms_iqr": 0.1,
              "throughput_median": 10.0, "notes": ""}
    models = [dict(common, benchmark="models", subject=TEACHER, params=22_700_000, flops=2.9e9,
                   latency_ms_median=10.0, speedup=1.0, flop_bound=1.0, fraction_of_bound=1.0),
              dict(common, benchmark="models", subject="kroneckerbert_8", params=3_000_000,
                   flops=0.7e9, latency_ms_median=5.0, speedup=2.0, flop_bound=4.1,
                   fraction_of_bound=0.49)]
    pd.DataFrame(models).to_csv(results / "efficiency.csv", index=False)
    layers = [dict(common, benchmark="layers", subject="kroneckerbert_8/attention", params=10,
                   flops=10, latency_ms_median=1.0, speedup=2.5, flop_bound=4.0,
                   fraction_of_bound=0.62)]
    pd.DataFrame(layers).to_csv(results / "efficiency_layers.csv", index=False)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    write_runs(root)
    results = root / "results"
    frames = aggregate([root / "runs"], results,
                              unavailable=["qqp", {"task": "squad_v2", "reason": "no data"}],
                              majority=MAJORITY)
    write_efficiency(results)
    tables = write_tables(results)
    figures = write_figures(results, root / "figures")
    return {"root": root, "results": results, "frames": frames, "tables": tables,
            "figures": figures}


def read(outputs, name):
    return pd.read_csv(outputs["results"] / name)


def test_result_files_have_the_contract_columns(outputs):
    required = ["model", "family", "variant", "augment", "task", "eval_split", "data_status",
                "n_examples", "seed", "score", "params", "compression_factor", "flops", "teacher",
                "preset", "git_commit", "config_hash", "teacher_hash", "data_sha256", "wall_time_s"]
    for name in ("glue", "squad", "teacher", "ablation"):
        assert set(required) <= set(read(outputs, f"{name}.csv").columns), name
    assert {"mrpc_f1", "mrpc_acc"} <= set(read(outputs, "glue.csv").columns)
    assert "squad_v1_f1" not in read(outputs, "glue.csv").columns
    assert {"squad_v1_em", "squad_v1_f1"} <= set(read(outputs, "squad.csv").columns)


def test_one_row_per_model_variant_task_seed_split(outputs):
    glue = read(outputs, "glue.csv")
    scored = glue[glue["data_status"] != "unavailable"]
    keys = list(zip(scored["model"], scored["variant"], scored["task"], scored["seed"],
                    scored["eval_split"]))
    expected = {(m, v, "mrpc", s, "validation") for m, v, s in MRPC} | {
        ("teacher", "teacher", "mrpc", 0, "validation")}
    assert sorted(keys) == sorted(expected)
    squad = read(outputs, "squad.csv")
    assert len(squad[squad["task"] == "squad_v1"]) == len(SQUAD) + 1
    assert set(read(outputs, "teacher.csv")["model"]) == {"teacher"}
    assert (read(outputs, "glue.csv")["teacher"] == TEACHER).all()


def test_ablation_has_variants_and_their_full_counterparts(outputs):
    ablation = read(outputs, "ablation.csv")
    assert set(zip(ablation["model"], ablation["variant"])) == {
        ("kroneckerbert_8", "full"), ("kroneckerbert_8", "no_general_kd")}
    assert set(ablation["task"]) == {"mrpc"}


def test_unavailable_tasks_are_rows_not_gaps(outputs):
    glue = read(outputs, "glue.csv")
    qqp = glue[glue["task"] == "qqp"]
    assert set(qqp["data_status"]) == {"unavailable"}
    assert set(qqp["model"]) == {"teacher", "kroneckerbert_8", "kroneckerbert_21"}
    assert qqp["mrpc_f1"].isna().all() and qqp["score"].isna().all()
    squad_v2 = read(outputs, "squad.csv").query("task == 'squad_v2'")
    assert set(squad_v2["notes"]) == {"no data"}


def test_summary_mean_sd_median_n(outputs):
    summary = read(outputs, "glue_summary.csv")
    row = summary.query("model == 'kroneckerbert_8' and variant == 'full' and task == 'mrpc'")
    assert len(row) == 1
    row = row.iloc[0]
    assert row["mrpc_f1_mean"] == pytest.approx(0.82)
    assert row["mrpc_f1_sd"] == pytest.approx(math.sqrt(2 * 0.02 ** 2))
    assert row["mrpc_f1_median"] == pytest.approx(0.82)
    assert row["mrpc_acc_mean"] == pytest.approx(0.72)
    assert row["n"] == 2
    assert row["score_mean"] == pytest.approx((0.82 + 0.72) / 2)


def test_retention_hand_worked(outputs):
    retention = read(outputs, "retention.csv")
    row = retention.query("model == 'kroneckerbert_8' and variant == 'full' "
                          "and metric == 'mrpc_f1'").iloc[0]
    assert row["teacher"] == TEACHER
    assert row["retention_pct"] == pytest.approx(0.82 / 0.88 * 100)     # 93.18
    assert retention_pct(0.5, 0.0) != retention_pct(0.5, 0.0)  # NaN for teacher 0


def test_tables_show_paper_and_ours(outputs):
    tables = outputs["results"] / "tables"
    assert {p.name for p in outputs["tables"]} >= {
        "table1_shapes_params_flops.md", "table2_glue_cf_lt_10.md", "table2_glue_cf_lt_10.tex",
        "table3_glue_extreme.md", "table4_7_glue_dev.md", "table5_squad.md",
        "table6_ablation.md"}
    table2 = (tables / "table2_glue_cf_lt_10.md").read_text()
    assert "| 83.0 | 82.7 |" in table2                 # KroneckerBERT_8 MNLI-m/mm as printed
    assert "82.0 ± 2.8*" in table2                     # ours, dev split marked
    assert "93.2" in table2                            # retention 0.82 / 0.88
    assert "n/a (unavailable offline)" in table2       # QQP
    assert "kroneckerbert_21" not in table2            # CF >= 10 goes to Table 3
    assert "kroneckerbert_21 (full)" in (tables / "table3_glue_extreme.md").read_text()
    squad = (tables / "table5_squad.md").read_text()
    assert "61.0 ± 1.4" in squad and "78.1" in squad and "n/a (no data)" in squad
    ablation = (tables / "table6_ablation.md").read_text()
    assert "kroneckerbert_8 (no_general_kd)" in ablation and "70.8" in ablation
    table1 = (tables / "table1_shapes_params_flops.md").read_text()
    assert "14,654,216" in table1 and "7.57x" not in table1 and "7.6x" in table1
    tex = (tables / "table2_glue_cf_lt_10.tex").read_text()
    assert r"\begin{tabular}" in tex and r"82.0 $\pm$ 2.8*" in tex


def test_figures_exist_and_are_not_empty(outputs):
    names = {p.name for p in outputs["figures"]}
    for stem in ("score_vs_params", "score_vs_flops", "retention", "ablation", "speed_vs_flops"):
        for suffix in (".png", ".pdf"):
            assert f"{stem}{suffix}" in names
    assert all(p.stat().st_size > 1000 for p in outputs["figures"])


def test_figures_skip_cleanly_without_inputs(tmp_path, caplog):
    with caplog.at_level("INFO"):
        assert write_figures(tmp_path, tmp_path / "figures") == []
    assert "skipping" in caplog.text
    assert list((tmp_path / "figures").iterdir()) == []


def test_tables_without_results_show_only_published(tmp_path):
    write_tables(tmp_path)
    table2 = (tmp_path / "tables" / "table2_glue_cf_lt_10.md").read_text()
    assert "KroneckerBERT_8" in table2 and "ours" not in table2.split("\n- ")[0]


def test_published_yaml_is_complete():
    published = load_published()
    for table_id, table in published["tables"].items():
        assert table["citation"] and table["ref"], table_id
        assert table["source"] in published["sources"], table_id
        assert table["split"] in {"test", "dev", "n/a"}, table_id
        keys = [column_spec(published, c)["key"] for c in table["columns"]]
        for row in table["rows"]:
            assert set(row) <= {"model", "label", "variant", "role", "values", "notes", "setup", "id"}, row
            assert set(row["values"]) <= set(keys), (table_id, row["id"])
    kb8 = published_row(published, "kb_table2", "kroneckerbert_8")["values"]
    assert kb8["mnli_m"] == 83.0 and published["models"]["kroneckerbert_8"]["params_m"] == 14.3
    assert published["models"]["mobilebert_tiny"]["gflops"] == 3.1


def test_split_tags_separate_mnli_halves():
    assert split_tag("validation_matched") == "matched"
    assert split_tag("validation_mismatched") == "mismatched"
    assert split_tag("validation") == ""
    assert split_kind("test") == "test" and split_kind("validation") == "dev"


def test_our_cell_prefers_the_papers_split_and_picks_mnli_halves():
    summary = pd.DataFrame({
        "task": ["mnli", "mnli", "mrpc", "mrpc"],
        "eval_split": ["validation_matched", "validation_mismatched", "validation", "test"],
        "data_status": ["subset", "subset", "full", "full"],
        "notes": [None] * 4, "n": [1, 1, 1, 1],
        "mnli_acc_mean": [0.70, 0.71, None, None], "mnli_acc_sd": [None] * 4,
        "mrpc_f1_mean": [None, None, 0.80, 0.78], "mrpc_f1_sd": [None] * 4})
    published = load_published()
    cell = our_cell(summary, column_spec(published, "mnli_mm"), "dev")
    assert cell.value == pytest.approx(0.71) and cell.show() == "71.0"
    on_test = our_cell(summary, column_spec(published, "mrpc_f1"), "test")
    assert on_test.show() == "78.0" and on_test.eval_split == "test"
    on_dev = our_cell(summary[summary["eval_split"] != "test"],
                             column_spec(published, "mrpc_f1"), "test")
    assert on_dev.show() == "80.0*"


def test_margin_retention_golden_cases():
    from kbert.retention import margin_retention, mean_margin_retention

    assert margin_retention(0.60, 0.80, 0.60) == 0.0              # student at the majority
    assert margin_retention(0.80, 0.80, 0.60) == 1.0              # student equal to the teacher
    assert margin_retention(0.70, 0.80, 0.60) == pytest.approx(0.5)
    assert math.isnan(margin_retention(0.64, 0.64, 0.60))         # teacher only 4 points above
    assert math.isnan(margin_retention(0.56, 0.52, 0.53))         # teacher below the majority
    assert margin_retention(0.10, 0.50, None) == pytest.approx(0.2)  # correlation: majority 0
    value, counted = mean_margin_retention({"sst2": 0.7, "cola": 0.1, "rte": math.nan})
    assert value == pytest.approx(0.4) and counted == ["cola", "sst2"]


def test_paper_way_retention_is_a_ratio_of_averages_over_shared_columns():
    from kbert.retention import paper_way_retention

    ratio, columns = paper_way_retention({"a": 0.6, "b": 0.2, "c": 0.9},
                                         {"a": 0.8, "b": 0.4, "c": math.nan})
    assert columns == ["a", "b"] and ratio == pytest.approx(0.4 / 0.6)   # not mean(0.75, 0.5)
    published = load_published()            # the paper's own 97.7% (Table 2, 9 columns)
    kb8 = published_row(published, "kb_table2", "kroneckerbert_8")["values"]
    bert = published_row(published, "kb_table2", "bert_base")["values"]
    ratio, columns = paper_way_retention({c: kb8[c] for c in PAPER_GLUE_COLUMNS},
                                         {c: bert[c] for c in PAPER_GLUE_COLUMNS})
    assert len(columns) == 9 and "wnli" not in columns and 100 * ratio == pytest.approx(97.7, abs=0.05)


def test_retention_csv_labels_every_measure(outputs):
    retention = read(outputs, "retention.csv")
    assert set(retention["measure"]) == {"raw", "margin", "margin_mean", "paper_way"}
    kb8 = retention[(retention["model"] == "kroneckerbert_8") & (retention["variant"] == "full")]
    margin = kb8[(kb8["measure"] == "margin") & (kb8["task"] == "mrpc")].iloc[0]
    # key score: student (0.82 + 0.72) / 2 = 0.77, teacher 0.84, majority 0.70
    assert margin["retention_pct"] == pytest.approx(50.0)
    headline = kb8[kb8["measure"] == "margin_mean"].iloc[0]
    assert headline["retention_pct"] == pytest.approx(50.0) and headline["covers"] == "mrpc"
    paper_way = kb8[kb8["measure"] == "paper_way"].iloc[0]
    assert paper_way["retention_pct"] == pytest.approx(0.82 / 0.88 * 100)
    assert paper_way["covers"] == "MRPC"
    assert set(read(outputs, "majority.csv")["task"]) == {"mrpc", "squad_v1"}


def summary_row(model, task, metric, value, family="kronecker", flops=1e9, split="validation"):
    return {"preset": "p", "model": model, "family": family, "variant": family if family ==
            "teacher" else "full", "augment": False, "teacher": "t", "task": task,
            "eval_split": split, "data_status": "full", "n": 1, "notes": "", "params": 3e6,
            "compression_factor": 7.5 if family != "teacher" else 1.0, "flops": flops,
            "score_mean": value, f"{metric}_mean": value, f"{metric}_sd": math.nan}


def test_score_vs_flops_uses_each_tasks_own_flops():
    """A GLUE panel's FLOPs are at seq 128, not the SQuAD (seq 384) count of the same model."""
    summary = pd.DataFrame([summary_row("kb", "mrpc", "mrpc_f1", 0.8, flops=1e9),
                            summary_row("kb", "squad_v1", "squad_v1_f1", 0.5, flops=3.5e9)])
    published = load_published()
    (point,) = our_points(summary, column_spec(published, "mrpc_f1"))
    assert point[2] == 1e9
    (point,) = our_points(summary, column_spec(published, "squad_v1_f1"))
    assert point[2] == 3.5e9


def test_table_average_covers_only_shared_columns_and_marks_the_majority():
    rows = [summary_row("teacher", "mrpc", "mrpc_f1", 0.90, family="teacher"),
            summary_row("teacher", "sst2", "sst2_acc", 0.80, family="teacher"),
            summary_row("kroneckerbert_8", "mrpc", "mrpc_f1", 0.60),
            summary_row("kroneckerbert_8", "sst2", "sst2_acc", 0.40),
            summary_row("kronecker_aug", "mrpc", "mrpc_f1", 0.70)]
    summary = pd.DataFrame(rows)
    published = load_published()
    layout = next(l for l in LAYOUTS if l.name == "table4_7_glue_dev")
    majority = {("sst2", "validation", "sst2_acc"): 0.41, ("sst2", "validation", "score"): 0.41}
    table = score_table(published, layout, summary[summary["family"] != "teacher"],
                               summary[summary["family"] == "teacher"], majority)
    _, header, main = table.blocks[0]
    ours = {row[0]: dict(zip(header, row)) for row in main if row[1] == "ours"}
    kb8 = ours["kroneckerbert_8 (full)"]
    assert kb8["Avg"] == "60.0"                # MRPC only: the other student has no SST-2
    assert kb8["SST-2"] == "40.0†"             # within 2 points of the majority (41)
    assert kb8["Ret. % = Avg / teacher Avg (cols)"] == "66.7 (1)"
    assert any("cover MRPC:" in note for note in table.notes)
    # Every † has its number on the page: a majority-class row, on the split and metric shown.
    majority_row = ours["Majority class (p)"]
    assert majority_row["SST-2"] == "41.0"
    assert majority_row["MRPC"] == "–"             # no majority.csv entry for MRPC here
    assert majority_row["Avg"] == "–"


@pytest.mark.parametrize("layout_name,majority", [
    ("table4_7_glue_dev", {}),                                              # no majority.csv
    ("table3_glue_extreme", {("sst2", "validation", "sst2_acc"): 0.5}),     # CF >= 10: no row of ours
], ids=["no_majority_csv", "no_rows_of_ours"])
def test_no_majority_row_without_majority_scores_or_rows_of_ours(layout_name, majority):
    rows = [summary_row("teacher", "sst2", "sst2_acc", 0.80, family="teacher"),
            summary_row("kroneckerbert_8", "sst2", "sst2_acc", 0.40)]
    summary = pd.DataFrame(rows)
    layout = next(l for l in LAYOUTS if l.name == layout_name)
    table = score_table(load_published(), layout, summary[summary["family"] != "teacher"],
                        summary[summary["family"] == "teacher"], majority)
    assert not any(row[0].startswith("Majority class") for row in table.blocks[0][2])
