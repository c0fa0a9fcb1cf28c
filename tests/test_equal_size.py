"""Equal-size baselines: low-rank and dense TinyBERT-style students built by the same compress step."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kbert.students import (MATCH_TOLERANCE, compress, count_parameters, select_teacher_weights, student_config,
                            student_errors)
from kbert.losses import distillation_loss, intermediate_losses
from kbert.layers.lowrank import LowRankEmbedding, LowRankLinear, truncated_svd
from kbert.modeling import KBertConfig, KBertForSequenceClassification, KBertModel, teacher_layers

MINILM = KBertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536)
TINY = dict(vocab_size=200, hidden_size=48, num_hidden_layers=6, num_attention_heads=12, intermediate_size=192,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.mark.parametrize("teacher, kron_spec", [
    (MINILM, {"target_compression": 7.7}),
    (MINILM, {"target_compression": 21}),
    (KBertConfig(), {"preset": "kroneckerbert_8"}),
    (KBertConfig(), {"preset": "kroneckerbert_21"}),
])
def test_all_three_families_have_the_same_parameter_count(teacher, kron_spec):
    target = count_parameters(student_config(teacher, kron_spec))
    for family in ("lowrank", "dense"):
        config = student_config(teacher, {"family": family, "match": "k"}, match_spec=kron_spec)
        assert abs(count_parameters(config) / target - 1) <= MATCH_TOLERANCE, family


def test_tinybert4_shape_matches_kroneckerbert8_on_bert_base():
    """The issue's dense student at the 8x budget: TinyBERT_4 (4 x 312, FFN 1200, 12 heads)."""
    spec = {"family": "dense", "match": "k", "num_hidden_layers": 4, "hidden_size": 312, "intermediate_size": 1200}
    config = student_config(KBertConfig(), spec, match_spec={"preset": "kroneckerbert_8"})
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (4, 312, 1200)
    assert count_parameters(config) == 14_350_248  # TinyBERT's paper: 14.5M with its 1.2M-param fit_dense layers


def test_a_dense_shape_too_far_from_the_budget_is_refused():
    spec = {"family": "dense", "match": "k", "hidden_size": 312, "intermediate_size": 1200}
    with pytest.raises(ValueError, match="off the 5,228,272 of the Kronecker student"):
        student_config(KBertConfig(), spec, match_spec={"preset": "kroneckerbert_21"})
    with pytest.raises(ValueError, match="needs 'match"):
        student_config(KBertConfig(), {"family": "lowrank"})


def test_projection_only_in_the_dense_family_and_not_counted():
    torch.manual_seed(0)
    teacher = KBertModel(KBertConfig(**TINY)).eval()
    kron = {"target_compression": 4}
    built = {f: compress(teacher, spec, kron if f != "kronecker" else None)[0]
             for f, spec in [("kronecker", kron), ("lowrank", {"family": "lowrank", "match": "k"}),
                             ("dense", {"family": "dense", "match": "k"})]}
    for family, model in built.items():
        has = any(name.startswith("fit_dense.") for name in model.state_dict())
        assert has == (family == "dense"), family
    dense = built["dense"]
    assert dense.fit_dense.weight.shape == (48, dense.config.hidden_size)
    total = sum(p.numel() for p in dense.parameters())
    assert count_parameters(dense.config) == total - dense.fit_dense.weight.numel() - 48
    # The dense student is TinyBERT-style: a third of the layers, the teacher's head count.
    assert dense.config.num_hidden_layers == 2 and dense.config.num_attention_heads == 12


def test_low_rank_init_is_the_truncated_svd():
    torch.manual_seed(0)
    W = torch.randn(24, 40, dtype=torch.float64)
    U, V = truncated_svd(W, 5)
    S = torch.linalg.svdvals(W)
    # Eckart-Young: the error of the best rank-5 approximation is the tail of the spectrum.
    assert float((W - U @ V).norm()) == pytest.approx(float(S[5:].norm()), rel=1e-10)
    layer = LowRankLinear(40, 24, 5).double()
    with torch.no_grad():
        layer.U.copy_(U)
        layer.V.copy_(V)
        layer.bias.normal_()
    x = torch.randn(3, 7, 40, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ (U @ V).T + layer.bias)
    emb = LowRankEmbedding(10, 6, 2)
    ids = torch.tensor([[0, 3, 9]])
    torch.testing.assert_close(emb(ids), emb.weight[ids])
    with pytest.raises(ValueError, match="rank 9 is not allowed"):
        LowRankLinear(8, 4, 9)


def test_low_rank_student_copies_the_teacher_outside_the_factorised_matrices():
    torch.manual_seed(0)
    teacher = KBertForSequenceClassification(KBertConfig(**TINY, num_labels=3)).eval()
    student, report = compress(teacher, {"family": "lowrank", "match": "k"}, {"target_compression": 4})
    assert report["family"] == "lowrank" and set(report["low_rank"]) == {"attention_rank", "ffn_rank", "embedding_rank"}
    assert isinstance(student.bert.encoder.layer[0].attention.self.query, LowRankLinear)
    for name in ("classifier.weight", "bert.pooler.dense.weight", "bert.embeddings.position_embeddings.weight",
                 "bert.encoder.layer.2.attention.self.query.bias"):
        torch.testing.assert_close(student.state_dict()[name], teacher.state_dict()[name])
    q_student = student.bert.encoder.layer[2].attention.self.query
    W = teacher.bert.encoder.layer[2].attention.self.query.weight.detach()
    S = torch.linalg.svdvals(W.double())
    assert float((q_student.weight - W).detach().norm()) == pytest.approx(float(S[q_student.rank:].norm()), rel=1e-4)


def test_tinybert_layer_mapping():
    assert teacher_layers(4, 12) == [3, 6, 9, 12]
    assert teacher_layers(2, 6) == [3, 6]
    assert teacher_layers(6, 6) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="must divide the teacher's"):
        teacher_layers(4, 6)


def _fake_outputs(hidden, scores):
    return SimpleNamespace(hidden_states=tuple(hidden), attention_scores=tuple(scores))


def test_mapped_layers_and_projection_enter_the_losses():
    """A 2-layer student equal to teacher layers 3 and 6 after its projection has zero loss."""
    torch.manual_seed(0)
    B, T, H, d_s, d_t = 2, 5, 3, 4, 8
    mask = torch.ones(B, T)
    t_hidden = [torch.randn(B, T, d_t) for _ in range(7)]
    t_scores = [torch.randn(B, H, T, T) for _ in range(6)]
    projection = torch.nn.Linear(d_s, d_t)
    s_hidden = [torch.randn(B, T, d_s) for _ in range(3)]
    with torch.no_grad():
        t_hidden = [projection(s_hidden[0]), *t_hidden[1:3], projection(s_hidden[1]), *t_hidden[4:6],
                    projection(s_hidden[2])]
    student = _fake_outputs(s_hidden, [t_scores[2], t_scores[5]])
    teacher = _fake_outputs(t_hidden, t_scores)
    terms = intermediate_losses(student, teacher, mask, projection)
    assert all(float(v.detach()) == pytest.approx(0.0, abs=1e-12) for v in terms.values())
    # Map to the wrong layers, or forget the projection: clear errors or a non-zero loss.
    wrong = intermediate_losses(_fake_outputs(s_hidden, [t_scores[1], t_scores[4]]), teacher, mask, projection)
    assert float(wrong["attention"]) > 0
    with pytest.raises(ValueError, match="a projection is needed exactly when"):
        intermediate_losses(student, teacher, mask)


def test_dense_student_distils_from_a_real_teacher():
    """Gradients reach the dense student's fit_dense; its loss terms are finite."""
    torch.manual_seed(0)
    teacher = KBertForSequenceClassification(KBertConfig(**TINY, num_labels=2)).eval()
    student, _ = compress(teacher, {"family": "dense", "match": "k"}, {"target_compression": 4})
    student.train()
    ids = torch.randint(1, 200, (2, 9))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "labels": torch.tensor([0, 1])}
    with torch.no_grad():
        t_out = teacher(**batch)
    weights = {"embedding": 1.0, "attention": 1.0, "hidden": 1.0, "logit": 1.0, "supervised": 1.0}
    loss, terms = distillation_loss(student(**batch), t_out, batch["attention_mask"], weights, "classification",
                                    projection=student.bert.fit_dense)
    loss.backward()
    assert torch.isfinite(loss) and set(terms) == set(weights)
    assert student.bert.fit_dense.weight.grad.abs().sum() > 0


def test_a_win_needs_non_overlapping_spread():
    from kbert.report.equal_size import verdict

    def row(mean, sd, family, n=3):
        return {"score_mean": mean, "score_sd": sd, "family": family, "n": n}

    assert verdict(row(0.80, 0.01, "kronecker"), row(0.70, 0.02, "dense")) == "kronecker"
    assert verdict(row(0.70, 0.01, "kronecker"), row(0.80, 0.02, "dense")) == "dense"
    assert verdict(row(0.80, 0.05, "kronecker"), row(0.75, 0.02, "lowrank")) == "overlap"
    assert verdict(row(0.80, float("nan"), "kronecker", 1), row(0.70, 0.01, "dense")) == "one seed"
    assert verdict(None, row(0.79, 0.0, "dense")) == "missing"


def test_majority_class_scores_on_the_bundled_data():
    """A constant answer, scored by each task's metrics (the level a student that learnt
    nothing reaches: KroneckerBERT_21 scored exactly these on QNLI and MNLI in the
    reference run): the most frequent training label, or "no answer" on SQuAD."""
    from kbert.config import load_config
    from kbert.retention import majority_frame, majority_lookup

    config = load_config("config/config.yaml")
    majority = majority_lookup(majority_frame(config, ["sst2", "cola", "mrpc", "mnli", "stsb",
                                                       "squad_v1", "squad_v2"]))
    # Whole dev splits (SST-2 872 sentences, MNLI 506 / 1,000 pairs; the reference run's
    # 500-example caps gave 0.504, 0.378 and 0.326).
    assert majority["sst2", "validation", "score"] == pytest.approx(0.5092, abs=5e-4)
    assert majority["cola", "validation", "cola_mcc"] == 0.0  # a constant has MCC 0
    # MRPC: always "equivalent": the score is the mean of F1 and accuracy.
    assert majority["mrpc", "validation", "score"] == pytest.approx(0.748, abs=5e-4)
    assert majority["mrpc", "validation", "mrpc_f1"] > majority["mrpc", "validation", "score"]
    assert majority["mnli", "validation_matched", "score"] == pytest.approx(0.3755, abs=5e-4)
    assert majority["mnli", "validation_mismatched", "score"] == pytest.approx(0.346)
    assert majority["stsb", "validation", "score"] != majority["stsb", "validation", "score"]  # NaN: no correlation
    assert majority["squad_v1", "validation", "squad_v1_f1"] == 0.0  # every question has an answer
    # SQuAD v2.0: "no answer" scores the share of unanswerable questions (47.7 in the reference run).
    assert majority["squad_v2", "validation", "score"] == pytest.approx(0.477, abs=5e-4)


def test_a_win_at_the_majority_class_is_marked():
    """Beating a rival by predicting the majority class is not learning; the verdict says so."""
    import pandas as pd

    from kbert.report.equal_size import verdicts, won_at_majority

    def row(family, mean, sd, majority):
        return {"model": family, "budget": "k", "family": family, "variant": "full", "task": "mnli",
                "eval_split": "validation_matched", "n": 3, "score_mean": mean, "score_sd": sd, "majority": majority}

    at_majority = pd.DataFrame([row("kronecker", 0.34, 0.03, 0.378), row("dense", 0.378, 0.0, 0.378),
                                row("lowrank", 0.50, 0.01, 0.378)]).set_index("family", drop=False)
    wins = verdicts(at_majority).set_index("rival")
    assert wins.loc["dense", "winner"] == "dense" and won_at_majority(wins.loc["dense", "winner_above_majority"])
    assert wins.loc["lowrank", "winner"] == "lowrank" and wins.loc["lowrank", "winner_above_majority"]
    no_majority = at_majority.assign(majority=None)
    assert verdicts(no_majority)["winner_above_majority"].isna().all()


def test_initialisation_error_per_matrix_group(tmp_path):
    """init_error.csv: the compress records' per-matrix errors averaged per group
    (attention, FFN, word embedding), dense students without any; a student outside the
    sweep is left out. The table ends with the block."""
    import json

    from kbert.report.equal_size import _init_block, init_errors

    students = {"k8": {"family": "kronecker"}, "lr8": {"family": "lowrank", "match": "k8"},
                "tb8": {"family": "dense", "match": "k8"}}
    errors = {"k8": {"embeddings.word_embeddings": 0.9, "encoder.layer.0.attention.self.query": 0.8,
                     "encoder.layer.0.attention.output.dense": 0.6, "encoder.layer.0.intermediate.dense": 0.95,
                     "encoder.layer.0.output.dense": 0.85},
              "lr8": {"embeddings.word_embeddings": 0.8, "encoder.layer.0.attention.self.key": 0.5,
                      "encoder.layer.0.output.dense": 0.7},
              "tb8": {}, "other": {"embeddings.word_embeddings": 0.1}}
    for name, per_matrix in errors.items():
        (tmp_path / name).mkdir()
        family = students.get(name, {"family": "kronecker"})["family"]
        mean = sum(per_matrix.values()) / len(per_matrix) if per_matrix else None
        (tmp_path / name / "metrics.json").write_text(json.dumps({
            "student": name, "stage": "compress", "family": family, "init": "svd", "params": 1000,
            "relative_error": per_matrix, "relative_error_mean": mean}))
    init = init_errors([tmp_path], students).set_index("model")
    assert list(init.index) == ["k8", "lr8", "tb8"]
    assert init.loc["k8", "error_attention"] == pytest.approx(0.7)
    assert init.loc["k8", "error_ffn"] == pytest.approx(0.9)
    assert init.loc["k8", "error_embedding"] == pytest.approx(0.9)
    assert init.loc["lr8", "error_all"] == pytest.approx(2.0 / 3)
    assert init.loc[["tb8"], ["error_attention", "error_ffn", "error_embedding"]].isna().all().all()
    assert set(init["budget"]) == {"k8"}
    heading, _, rows = _init_block(init.reset_index(), {"k8": "KroneckerBERT_8"})
    assert "Initialisation error" in heading
    assert [r[1] for r in rows] == ["Kronecker", "Dense (TinyBERT-style)", "Low-rank (SVD)"]
    assert rows[0][3:] == ["0.700", "0.900", "0.900", "0.820"] and rows[1][3] == "random init"


def test_start_and_no_general_kd_rows_explain_but_never_decide_a_verdict():
    """no_general_kd runs and start-of-task-KD scores fill the "start and end" block; the
    verdicts count the full runs only."""
    import pandas as pd

    from kbert.report.equal_size import START_VARIANTS, _start_block, start_scores, students_and_teachers, table, verdicts

    def row(family, variant, mean):
        return {"model": family, "budget": "k", "family": family, "variant": variant, "task": "sst2",
                "eval_split": "validation", "n": 3, "score_mean": mean, "score_sd": 0.01, "majority": 0.509}

    summary = pd.DataFrame([row("kronecker", "full", 0.80), row("lowrank", "full", 0.70),
                            row("kronecker", "no_general_kd", 0.60), row("lowrank", "no_general_kd", 0.95)])
    wins = verdicts(summary).set_index("rival")
    assert wins.loc["lowrank", "winner"] == "kronecker"  # the no_general_kd 0.95 is not the comparison
    starts = pd.DataFrame([{"model": "kronecker", "family": "kronecker", "budget": "k", "variant": "full",
                            "task": "sst2", "eval_split": "validation", "seed": 0, "score": 0.55}])
    finals = {variant: students_and_teachers(summary, variant)[0] for variant in START_VARIANTS}
    title, header, rows = _start_block(finals, starts, "k", {"k": "8x"})
    assert "Budget of 8x" in title and header[0] == "Task"
    assert rows[0] == ["SST-2", "Kronecker", "55.0", "80.0 ± 1.0 (n=3)", "–", "60.0 ± 1.0 (n=3)"]
    assert rows[1][:3] == ["SST-2", "Low-rank (SVD)", "–"] and rows[1][5] == "95.0 ± 1.0 (n=3)"
    # Neither part run (full runs only, no start scores): the table has no such block.
    teacher = {**row("teacher", "teacher", 0.876), "model": "teacher", "budget": None}
    full_only = pd.concat([summary[summary["variant"] == "full"], pd.DataFrame([teacher])]).assign(
        params=1000, preset="default", teacher="t", data_status="full", n_examples=872)
    titles = [block[0] for block in table(full_only, verdicts(full_only), {}, starts=start_scores([], {})).blocks]
    assert titles and not any("start and the end of task KD" in title for title in titles)


def test_a_partial_sweep_says_how_many_seeds_each_cell_still_lacks():
    """Committed in parts, the table shows 'n=k of m' where a cell has fewer seeds than the
    config plans, and a note counts the cells still short; a complete cell shows 'n=m'."""
    import pandas as pd

    from kbert.report.equal_size import planned_seeds, table, verdicts

    def row(family, n):
        return {"model": family, "budget": "k", "family": family, "variant": "full", "task": "sst2",
                "eval_split": "validation", "n": n, "score_mean": 0.7, "score_sd": 0.01, "majority": 0.509}

    teacher = {**row("teacher", 1), "model": "teacher", "variant": "teacher", "budget": None, "score_mean": 0.876}
    summary = pd.DataFrame([row("kronecker", 3), row("lowrank", 1), teacher]).assign(
        params=1000, preset="default", teacher="t", data_status="full", n_examples=872)
    rendered = table(summary, verdicts(summary), {}, planned={"sst2": 3})
    cells = rendered.blocks[0][2][0]
    assert cells[3] == "70.0 ± 1.0 (n=3)" and cells[5] == "70.0 (n=1 of 3)" and cells[4] == "–"
    assert any(note.startswith("Partial sweep: 2 of 3 (budget, task, family) cells") for note in rendered.notes)
    complete = pd.DataFrame([row("kronecker", 3), row("lowrank", 3), row("dense", 3), teacher]).assign(
        params=1000, preset="default", teacher="t", data_status="full", n_examples=872)
    assert not any("Partial" in note for note in table(complete, verdicts(complete), {}, planned={"sst2": 3}).notes)
    assert planned_seeds({"equal_size": {"tasks": ["sst2", "mrpc"], "seeds": [0, 1, 2],
                                         "per_task_seeds": {"mrpc": [0, 1, 2, 3, 4]}}}) == {"sst2": 3, "mrpc": 5}
    # A sweep whose first runs are a rival's only: no verdict yet, and the table still renders.
    rival_only = pd.DataFrame([row("dense", 2), teacher]).assign(
        params=1000, preset="default", teacher="t", data_status="full", n_examples=872)
    rendered = table(rival_only, verdicts(rival_only), {}, planned={"sst2": 3})
    assert rendered.blocks[0][2][0][3:5] == ["–", "70.0 ± 1.0 (n=2 of 3)"]


def _partial_report_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "report_partial_equal_size", "workflow/scripts/report_partial_equal_size.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_a_partial_report_takes_only_the_runs_a_dry_run_would_not_redo(tmp_path, monkeypatch):
    """workflow/scripts/report_partial_equal_size.py: an existing run that Snakemake would
    rerun (stale) stays out of the table, as does a run not done yet."""
    script = _partial_report_script()
    monkeypatch.chdir(tmp_path)
    teacher, done, stale, todo = (f"w/{run}/metrics.json" for run in
                                  ("teacher/sst2", "task_kd/a", "task_kd/stale", "task_kd/todo"))
    start = "w/task_kd_start/a/metrics.json"
    for path in (teacher, done, stale, start):
        (tmp_path / path).parent.mkdir(parents=True)
        (tmp_path / path).write_text("{}")
    dry = (f"rule task_kd:\n    output: w/task_kd/stale/model, {stale}\n"
           f"rule task_kd:\n    output: w/task_kd/todo/model, {todo}\n"
           f"rule equal_size:\n    input: {teacher}, {done}, {stale}, {todo}, {start}, w/bench/speed.csv\n"
           "    output: results/equal_size\n")
    inputs = script.rule_inputs(dry)
    assert inputs == [teacher, done, stale, todo, start]
    records, missing = script.gather(Path("w"), None, inputs, script.pending_outputs(dry), {})
    assert records == [teacher, done, start] and missing == [stale, todo]


def test_an_archive_carries_a_run_only_with_what_it_was_made_from_at_todays_settings(tmp_path, monkeypatch):
    """A sweep outlives its machine: archived records stand in for missing ones when they
    and their teacher, init and general-KD records carry today's settings fingerprints."""
    from kbert.config import load_config, settings_record
    from kbert.stages import compress as compress_stage, finetune_teacher, general_kd, task_kd

    script = _partial_report_script()
    config = load_config("config/smoke.yaml")
    monkeypatch.chdir(tmp_path)
    sections = {"teacher": (finetune_teacher.CONFIG_SECTIONS, "mrpc", None),
                "students/kron_4/init": (compress_stage.CONFIG_SECTIONS, None, "kron_4"),
                "students/kron_4/general": (general_kd.CONFIG_SECTIONS, None, "kron_4"),
                "task_kd": (task_kd.CONFIG_SECTIONS, "mrpc", "kron_4")}

    def write(root, path, kind, with_settings=True):
        file = tmp_path / root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        settings = settings_record(config, *sections[kind][:1], task=sections[kind][1], student=sections[kind][2])
        file.write_text(json.dumps({"provenance": {"settings": settings} if with_settings else {}}))

    full, no_gkd = "task_kd/kron_4/full/mrpc/seed0/metrics.json", "task_kd/kron_4/no_general_kd/mrpc/seed0/metrics.json"
    # Machine 1 ran the teacher, the student and the full run; archive_done copies them all.
    write("w", "teacher/mrpc/metrics.json", "teacher")
    write("w", "students/kron_4/init/metrics.json", "students/kron_4/init")
    write("w", "students/kron_4/general/metrics.json", "students/kron_4/general")
    write("w", full, "task_kd")
    inputs = ["w/teacher/mrpc/metrics.json", f"w/{full}", f"w/{no_gkd}"]
    assert script.archive_done(Path("w"), Path("archive"), inputs, set()) == 4
    # Machine 2 starts empty: the archive stands in for what it has; the rest is to do.
    shutil.rmtree(tmp_path / "w")
    records, todo = script.gather(Path("w"), Path("archive"), inputs, set(), config)
    assert records == ["archive/teacher/mrpc/metrics.json", f"archive/{full}"] and todo == [f"w/{no_gkd}"]
    # General KD's settings changed since: the full run is not carried, its teacher still is.
    changed = {**config, "general_kd": {**config["general_kd"], "lr": 1.0}}
    records, todo = script.gather(Path("w"), Path("archive"), inputs, set(), changed)
    assert records == ["archive/teacher/mrpc/metrics.json"] and todo == [f"w/{full}", f"w/{no_gkd}"]
    assert "students/kron_4/general/metrics.json: its settings" in script.carry_refusal(Path("archive"), full, changed)
    # A record with no fingerprint is never carried.
    write("archive", "students/kron_4/init/metrics.json", "students/kron_4/init", with_settings=False)
    assert "no settings fingerprint" in script.carry_refusal(Path("archive"), full, config)
    assert script.seed_first(["w/task_kd/a/x/seed1/m", "w/task_kd_start/a/x/seed0/m", "w/task_kd/a/x/seed0/m"]) == [
        "w/task_kd/a/x/seed0/m", "w/task_kd_start/a/x/seed0/m", "w/task_kd/a/x/seed1/m"]


def test_selected_init_at_the_teachers_widths_is_an_exact_copy():
    """Weight selection keeps every index when nothing is narrower: the teacher itself."""
    torch.manual_seed(0)
    teacher = KBertModel(KBertConfig(**TINY)).eval()
    student = KBertModel(KBertConfig(**TINY)).eval()
    select_teacher_weights(student, teacher)
    ids = torch.randint(0, TINY["vocab_size"], (2, 9))
    assert torch.equal(student(ids).last_hidden_state, teacher(ids).last_hidden_state)


def test_selected_init_cuts_each_weight_from_the_teacher_layer_its_loss_maps_it_to():
    torch.manual_seed(0)
    teacher = KBertModel(KBertConfig(**TINY)).eval()
    spec = {"family": "dense", "match": "k", "init": "selected", "hidden_size": 36, "num_hidden_layers": 2}
    kron = {"attention_a_shape": [4, 4], "ffn_a_shape": [4, 2], "embedding_n": 2}
    student, report = compress(teacher, spec, kron)
    assert report["init"] == "selected"
    s, t = student.state_dict(), teacher.state_dict()
    residual = torch.linspace(0, 47, 36).round().long()            # 36 of 48 coordinates
    heads = torch.cat([h * 4 + torch.tensor([0, 2, 3]) for h in range(12)])   # 3 of 4 per head
    assert torch.equal(s["embeddings.word_embeddings.weight"], t["embeddings.word_embeddings.weight"][:, residual])
    # student layer 1 (0-based 0) from teacher layer 3, layer 2 from teacher layer 6
    assert torch.equal(s["encoder.layer.0.attention.self.query.weight"],
                       t["encoder.layer.2.attention.self.query.weight"][heads][:, residual])
    assert torch.equal(s["encoder.layer.1.attention.output.dense.weight"],
                       t["encoder.layer.5.attention.output.dense.weight"][residual][:, heads])
    assert torch.equal(s["encoder.layer.1.output.LayerNorm.bias"], t["encoder.layer.5.output.LayerNorm.bias"][residual])
    f = student.config.intermediate_size
    assert f < 192
    ffn = torch.linspace(0, 191, f).round().long()
    assert torch.equal(s["encoder.layer.0.intermediate.dense.weight"],
                       t["encoder.layer.2.intermediate.dense.weight"][ffn][:, residual])
    assert torch.equal(s["encoder.layer.0.output.dense.weight"], t["encoder.layer.2.output.dense.weight"][residual][:, ffn])
    # fit_dense puts the kept coordinates back where the teacher has them
    h = torch.randn(3, 36)
    back = student.fit_dense(h)
    dropped = torch.ones(48, dtype=torch.bool)
    dropped[residual] = False
    assert torch.equal(back[:, residual], h) and torch.equal(back[:, dropped], torch.zeros(3, 12))


def test_init_is_checked_against_the_family():
    teacher = KBertModel(KBertConfig(**TINY))
    kron = {"attention_a_shape": [4, 4], "ffn_a_shape": [4, 2], "embedding_n": 2}
    assert compress(teacher, {"family": "dense", "match": "k", "num_hidden_layers": 2}, kron)[1]["init"] == "random"
    with pytest.raises(ValueError, match="init: svd is for kronecker and lowrank students, not dense"):
        compress(teacher, {"family": "dense", "match": "k", "init": "svd"}, kron)
    with pytest.raises(ValueError, match="init: selected is for dense students, not kronecker"):
        compress(teacher, {**kron, "init": "selected"})
    with pytest.raises(ValueError, match="cannot select 96 of 48"):
        select_teacher_weights(KBertModel(KBertConfig(**{**TINY, "hidden_size": 96})), teacher)
    # ... and the config check says so before any job runs (the smoke teacher's FFN is narrow)
    wide = {"family": "dense", "match": "k", "init": "selected", "hidden_size": 24, "intermediate_size": 400}
    errors = student_errors(teacher.config, {"k": kron, "d": wide, "r": {**wide, "init": "random"}})
    assert len(errors) == 2 and errors[0].startswith("config.students.d: cannot select 400 of 192 teacher units")
    assert errors[1].startswith("config.students.r: the dense student has")   # random: only the size is off


def test_config_takes_selected_for_dense_students_only():
    from kbert.config import ConfigError, load_config

    base = {"preset": "t", "tasks": ["mrpc"], "students": {"k": {"target_compression": 4}}}
    dense = {"family": "dense", "match": "k", "init": "selected"}
    assert load_config({**base, "students": {**base["students"], "d": dense}})["students"]["d"]["init"] == "selected"
    for bad in ({**dense, "init": "svd"}, {"target_compression": 4, "init": "selected"}):
        with pytest.raises(ConfigError, match="family"):
            load_config({**base, "students": {**base["students"], "d": bad}})
