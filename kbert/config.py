"""Load, validate and query a kbert config (``config/*.yaml``).

``load_config`` checks a config against ``workflow/schemas/config.schema.yaml`` (JSON
Schema 2020-12), fills in the schema's defaults, then runs the checks a schema cannot
express (known tasks, student specs, overrides that name configured students). Every
problem is reported as a ``ConfigError`` whose message names the key path, e.g.::

    config.teacher.source: 'hf' is not one of ['packaged', 'hub', 'random']

The Snakefile calls the same function before it builds the DAG, so an error reads the
same inside and outside Snakemake.

``settings(config, stage, task, student)`` returns one stage's settings with overrides
merged, lowest to highest precedence::

    <stage>  <  per_task[task]  <  per_student[student]  <  per_student[student].per_task[task]

so a student's learning rate (Table 8: KroneckerBERT_21 uses 5e-4) wins over a task's
(SQuAD 1e-4) unless the student names the task itself.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from kbert import REPO_ROOT
from kbert.artifacts import atomic_path, config_hash

SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"

#: Stages that ``settings`` knows, as dotted paths into the config.
STAGES = ("teacher.finetune", "general_kd", "task_kd", "augment", "data", "ood")
#: What a stage's ``CONFIG_SECTIONS`` may name besides ``STAGES`` (see ``stage_settings``).
JOB_SECTIONS = ("student", "matched_student", "calibration", "corpus_source")
#: Explicit Kronecker shape keys of a student spec.
SHAPE_KEYS = ("attention_a_shape", "ffn_a_shape", "embedding_n", "rank")
#: Keys a dense (TinyBERT-style) student may fix.
DENSE_KEYS = ("hidden_size", "num_hidden_layers", "intermediate_size")
#: Rules whose resources come from ``resources`` (light rules get 1 thread, no GPU).
LIGHT_RULES = ("aggregate", "report")
#: Task-KD variants (Table 6): the whole pipeline, with augmentation, without general KD,
#: without task KD. The ladder's dose-response adds ``full_<k>ep`` (see ``dose_variant``).
VARIANTS = ("full", "full_aug", "no_general_kd", "no_task_kd")
DOSE_VARIANT = re.compile(r"full_(\d+)ep")


class ConfigError(ValueError):
    """An invalid config; the message names every offending key path."""


# --------------------------------------------------------------------------- loading


def _load_yaml(path: str | os.PathLike) -> dict:
    with open(path) as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or err
            raise ConfigError(f"config: {path}{where}: not valid YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must hold a mapping at the top level, not {type(data).__name__}")
    return data


def load_schema(schema_path: str | os.PathLike | None = None) -> dict:
    path = Path(schema_path) if schema_path else SCHEMA_PATH
    if not path.exists():
        raise ConfigError(f"config schema not found at {path} (kbert.config expects a source checkout)")
    with open(path) as handle:
        return yaml.safe_load(handle)


def _validator_class():
    """Draft 2020-12 validator that fills ``default`` values while it validates."""
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema and prop not in instance:
                    instance[prop] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": properties_with_defaults})


def _key_path(path) -> str:
    out = "config"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _allowed_keys(schema: dict, root: dict) -> list[str]:
    """Property names a (sub)schema allows, following $ref and allOf."""
    keys: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        keys.update(node.get("properties", {}))
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target = root
            for part in ref[2:].split("/"):
                target = target[part]
            stack.append(target)
        stack.extend(node.get("allOf", []))
    return sorted(keys)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _format_error(error, root: dict) -> str:
    where = _key_path(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(error.instance, dict):
        allowed = _allowed_keys(error.schema, root)
        extra = sorted(k for k in error.instance if k not in allowed)
        parts = []
        for key in extra:
            hint = difflib.get_close_matches(key, allowed, n=1)
            parts.append(f"{where}: unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        if parts:
            return "; ".join(parts) + f"; allowed keys: {allowed}"
    if error.validator == "type" and isinstance(error.instance, str) and _looks_numeric(error.instance):
        if "e" in error.instance.lower() and "." not in error.instance:
            return (f"{where}: {error.message} (YAML reads {error.instance} as text; "
                    f"write it with a decimal point, e.g. 5.0e-5)")
        return f"{where}: {error.message} (a number given as text)"
    if "propertyNames" in error.schema_path:
        return f"{where}: key {error.message}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    return f"{where}: {error.message}"


def deep_merge(base: dict, override: Mapping) -> dict:
    """A new dict: ``base`` with ``override`` merged in, recursively for nested mappings."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path_or_dict, schema_path: str | os.PathLike | None = None) -> dict:
    """Validate a config (a YAML path or a dict), fill defaults, return a new dict.

    Raises ``ConfigError`` listing every problem, one per line, each naming its key.
    """
    if isinstance(path_or_dict, Mapping):
        raw = copy.deepcopy(dict(path_or_dict))
        origin = "config"
    else:
        raw = _load_yaml(path_or_dict)
        origin = str(path_or_dict)
    schema = load_schema(schema_path)
    config = json.loads(json.dumps(raw, default=str))  # plain JSON types (YAML dates etc.)
    errors = sorted(_validator_class()(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    messages = list(dict.fromkeys(_format_error(e, schema) for e in errors))
    if not messages:
        messages = _semantic_errors(config)
    if messages:
        head = f"invalid config ({origin}):" if origin != "config" else "invalid config:"
        raise ConfigError(head + ("\n  " if len(messages) > 1 else " ") + "\n  ".join(messages))
    return config


def check_listed(config: dict, section: str, students: dict, errors: list[str]) -> None:
    """A sweep section (``equal_size``, ``ladder``) lists configured tasks and students only."""
    from kbert.tasks import TASKS

    for i, name in enumerate(config[section]["tasks"]):
        if name in TASKS and name not in config["tasks"]:
            errors.append(f"config.{section}.tasks[{i}]: {name!r} is not in config.tasks {config['tasks']}")
    for key in ("students", "dose_students"):
        for i, name in enumerate(config[section].get(key, [])):
            if name not in students:
                errors.append(f"config.{section}.{key}[{i}]: unknown student {name!r}; students: {sorted(students)}")


def _semantic_errors(config: dict) -> list[str]:
    """Checks the schema cannot express; assumes the schema passed."""
    from kbert.tasks import TASKS

    errors = []
    known_tasks = list(TASKS)

    def check_tasks(names, where):
        for i, name in enumerate(names):
            if name not in TASKS:
                hint = difflib.get_close_matches(name, known_tasks, n=1)
                errors.append(f"{where}[{i}]: unknown task {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; known tasks: {known_tasks}")

    def check_task_keys(mapping, where):
        for name in mapping:
            if name not in TASKS:
                errors.append(f"{where}: unknown task {name!r}; known tasks: {known_tasks}")

    check_tasks(config["tasks"], "config.tasks")
    check_tasks(config["ablation_tasks"], "config.ablation_tasks")
    check_tasks(config["data"]["unavailable"], "config.data.unavailable")
    for i, name in enumerate(config["ablation_tasks"]):
        if name in TASKS and name not in config["tasks"]:
            errors.append(f"config.ablation_tasks[{i}]: {name!r} is not in config.tasks {config['tasks']}")

    students = config["students"]
    for name, spec in students.items():
        where = f"config.students.{name}"
        family = spec["family"]
        misplaced = [k for k in DENSE_KEYS if k in spec and family != "dense"]
        if misplaced:
            errors.append(f"{where}: {misplaced} apply to dense students only (family is {family!r})")
        if family != "kronecker":
            kron_keys = [k for k in ("preset", "target_compression", *SHAPE_KEYS) if k in spec]
            match = spec.get("match")
            if kron_keys:
                errors.append(f"{where}: {kron_keys} apply to kronecker students only; a {family} student "
                              "takes 'match' and is sized from it")
            if match is None:
                errors.append(f"{where}.match: a {family} student needs 'match: <kronecker student>'")
            elif students.get(match, {}).get("family") != "kronecker":
                kron = sorted(k for k, v in students.items() if v["family"] == "kronecker")
                errors.append(f"{where}.match: {match!r} is not a kronecker student; kronecker students: {kron}")
            continue
        if "match" in spec:
            errors.append(f"{where}.match: only lowrank and dense students match another student")
        given = [k for k in ("preset", "target_compression") if k in spec]
        shapes = [k for k in SHAPE_KEYS if k in spec]
        if shapes:
            given.append("explicit shapes (" + ", ".join(shapes) + ")")
        if len(given) != 1:
            errors.append(f"{where}: give exactly one of 'preset', 'target_compression' or explicit shapes "
                          f"({', '.join(SHAPE_KEYS[:3])} [, rank]); got {given or 'none'}")
        elif shapes:
            missing = [k for k in SHAPE_KEYS[:3] if k not in spec]
            if missing:
                errors.append(f"{where}: explicit shapes need {list(SHAPE_KEYS[:3])}; missing {missing}")
    check_tasks(config["equal_size"]["tasks"], "config.equal_size.tasks")
    check_task_keys(config["equal_size"]["per_task_seeds"], "config.equal_size.per_task_seeds")
    check_tasks(config["ladder"]["tasks"], "config.ladder.tasks")
    check_tasks(config["learning_curve"]["tasks"], "config.learning_curve.tasks")
    check_task_keys(config["learning_curve"]["per_task"], "config.learning_curve.per_task")
    for i, name in enumerate(config["learning_curve"]["tasks"]):
        if name in TASKS and name not in config["tasks"]:
            errors.append(f"config.learning_curve.tasks[{i}]: {name!r} is not in config.tasks {config['tasks']}")
    dose = config["ladder"]["general_kd_epochs"]
    if dose != sorted(dose):
        errors.append(f"config.ladder.general_kd_epochs: {dose} must be ascending (each point continues the previous)")
    for section in ("equal_size", "ladder"):
        check_listed(config, section, students, errors)
    if config["ablation_students"] is not None:
        for i, name in enumerate(config["ablation_students"]):
            if name not in students:
                errors.append(f"config.ablation_students[{i}]: unknown student {name!r}; students: {sorted(students)}")
            elif students[name]["family"] != "kronecker":
                errors.append(f"config.ablation_students[{i}]: {name!r} is a {students[name]['family']} student; "
                              "the Table 6 ablations run on kronecker students")

    for stage in STAGES:
        section = _section(config, stage)
        where = f"config.{stage}"
        check_task_keys(section.get("per_task", {}), f"{where}.per_task")
        for student, override in section.get("per_student", {}).items():
            if student not in students:
                errors.append(f"{where}.per_student: unknown student {student!r}; students: {sorted(students)}")
            check_task_keys(override.get("per_task", {}), f"{where}.per_student.{student}.per_task")

    errors += _ood_errors(config)
    errors += _offline_errors(config)
    random = config["teacher"]["random"]
    if config["teacher"]["source"] == "random" and random["hidden_size"] % random["num_attention_heads"]:
        errors.append(f"config.teacher.random: hidden_size {random['hidden_size']} is not a multiple of "
                      f"num_attention_heads {random['num_attention_heads']}")
    return errors


def _ood_errors(config: dict) -> list[str]:
    """``ood.splits`` names OOD sets of the task registry only."""
    from kbert.tasks import OOD_SPLITS

    errors = []
    for i, name in enumerate(config["ood"]["splits"]):
        if name not in OOD_SPLITS:
            hint = difflib.get_close_matches(name, list(OOD_SPLITS), n=1)
            errors.append(f"config.ood.splits[{i}]: unknown OOD set {name!r}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; OOD sets: {list(OOD_SPLITS)}")
    return errors


def _offline_errors(config: dict) -> list[str]:
    """``offline: true`` with something only the Hub has: refused now, not after retries.

    Hub data may be read offline from a local mirror (``KBERT_HUB_DIR``).
    """
    if not config["offline"]:
        return []
    errors = []
    teacher = config["teacher"]
    if teacher["source"] == "hub":
        errors.append(f"config.teacher.source: 'hub' downloads the teacher {teacher['name']!r}, but config.offline "
                      "is true; set offline: false on a networked machine, or teacher.source: packaged")
    if not os.environ.get("KBERT_HUB_DIR"):
        if config["data"]["source"] == "hub":
            errors.append("config.data.source: 'hub' downloads the task data, but config.offline is true; set "
                          "offline: false, data.source: bundled, or point KBERT_HUB_DIR at a local mirror")
        if "wikipedia" in config["general_kd"]["corpus"]:
            errors.append("config.general_kd.corpus: 'wikipedia' (wikimedia/wikipedia) comes from the hub, but "
                          "config.offline is true; set offline: false, use corpus [wikitext2, squad_paragraphs], "
                          "or point KBERT_HUB_DIR at a local mirror")
    return errors


# --------------------------------------------------------------------------- queries


def _section(config: dict, stage: str) -> dict:
    node = config
    for part in stage.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"no config section {stage!r}; stages: {list(STAGES)}")
        node = node[part]
    return node


def settings(config: dict, stage: str, task: str | None = None, student: str | None = None) -> dict:
    """One stage's settings for (task, student) with overrides merged, without the override maps.

    ``stage`` is one of ``STAGES`` (``teacher.finetune``, ``general_kd``, ``task_kd``,
    ``augment``, ``data``). Precedence, lowest first: the stage, ``per_task[task]``,
    ``per_student[student]``, ``per_student[student].per_task[task]``.
    """
    section = _section(config, stage)
    out = {k: copy.deepcopy(v) for k, v in section.items() if k not in ("per_task", "per_student")}
    if task is not None:
        out = deep_merge(out, section.get("per_task", {}).get(task, {}))
    if student is not None:
        override = section.get("per_student", {}).get(student, {})
        out = deep_merge(out, {k: v for k, v in override.items() if k != "per_task"})
        if task is not None:
            out = deep_merge(out, override.get("per_task", {}).get(task, {}))
    return out


def stage_settings(config: dict, sections: tuple[str, ...], task: str | None = None,
                   student: str | None = None) -> dict:
    """What one job of a stage reads from the config: each of ``sections`` (the stage's
    ``CONFIG_SECTIONS``, kbert/stages/) under its last name (``teacher.finetune`` ->
    ``finetune``). The stage takes its settings from this dict and the rule's rerun
    fingerprint hashes it (workflow/rules/common.smk), so the two read the same sections.

    Besides ``STAGES`` (merged by ``settings``): ``student``, the job's entry of
    ``students``; ``matched_student``, the entry of the student it matches in size
    (``match``), absent when it matches none; ``calibration``, the text a data-aware init
    fits on (the student's general-KD corpus and the data source), absent for any other
    init; ``corpus_source``, where the general-KD corpus is read from (``data.source``).
    """
    picked = {}
    for section in sections:
        if section == "student":
            picked["student"] = copy.deepcopy(config["students"][student])
        elif section == "matched_student":
            if config["students"][student].get("match"):
                picked["matched_student"] = copy.deepcopy(config["students"][config["students"][student]["match"]])
        elif section == "corpus_source":
            picked["corpus_source"] = config["data"]["source"]
        elif section == "calibration":
            if config["students"][student].get("init") == "data_aware":
                corpus = settings(config, "general_kd", student=student)["corpus"]
                picked["calibration"] = {"corpus": corpus, "source": config["data"]["source"]}
        elif section in STAGES:
            picked[section.rsplit(".", 1)[-1]] = settings(config, section, task=task, student=student)
        else:
            raise ValueError(f"unknown config section {section!r}; a stage reads some of {[*STAGES, *JOB_SECTIONS]}")
    return picked


def teacher_identity(config: dict) -> dict:
    """What names the teacher every job depends on (part of every rerun fingerprint)."""
    return {"teacher": {k: config["teacher"][k] for k in ("source", "name", "random")}, "offline": config["offline"]}


def settings_fingerprint(config: dict, sections: tuple[str, ...], task: str | None = None,
                         student: str | None = None) -> str:
    """Short hash of what one job of a stage depends on: the teacher's identity and its
    ``stage_settings``. The job's rule reruns it when this changes (Snakemake's params
    trigger, workflow/rules/common.smk), and its metrics.json records it
    (``settings_record``), so that ``aggregate`` can refuse a record the config no longer
    produces (one copied between work directories, or kept with ``--rerun-triggers mtime``)."""
    parts = {**teacher_identity(config), **stage_settings(config, sections, task=task, student=student)}
    return config_hash(parts)[:16]


def settings_record(config: dict, sections: tuple[str, ...], task: str | None = None,
                    student: str | None = None) -> dict:
    """The ``provenance.settings`` of a stage's metrics.json: enough to recompute its
    ``settings_fingerprint`` from another config (``stale_settings``)."""
    return {"sections": list(sections), "task": task, "student": student,
            "fingerprint": settings_fingerprint(config, sections, task=task, student=student)}


def stale_settings(config: dict, record: dict) -> str | None:
    """Why a stage's metrics.json was not produced by ``config``'s settings, or None when it
    was or cannot be told (a record written before records carried ``settings``)."""
    settings = (record.get("provenance") or {}).get("settings")
    if not settings:
        return None
    if settings["student"] is not None and settings["student"] not in config["students"]:
        return f"student {settings['student']!r} is not in the config"
    now = settings_fingerprint(config, tuple(settings["sections"]), task=settings["task"], student=settings["student"])
    if now != settings["fingerprint"]:
        return (f"its settings ({', '.join(settings['sections'])}) hash to {settings['fingerprint']}, "
                f"the config's to {now}")
    return None


def resources(config: dict, rule: str) -> dict:
    """threads, gpu, mem_mb, runtime for one rule: ``resources`` then ``resources.per_rule[rule]``."""
    base = {k: v for k, v in config["resources"].items() if k != "per_rule"}
    if rule in LIGHT_RULES:
        base.update(threads=1, gpu=0)
    base.update(config["resources"].get("per_rule", {}).get(rule, {}))
    return base


def task_status(config: dict, task: str) -> str:
    """Train-split status of ``task`` for ``data.source``: full | subset | derived | unavailable.

    ``data.unavailable`` forces ``unavailable``. Bundled data follows the task registry
    (``kbert.tasks``); the hub has every split.
    """
    from kbert.tasks import TASKS

    if task in config["data"]["unavailable"]:
        return "unavailable"
    if config["data"]["source"] == "hub":
        return "full"
    return TASKS[task].offline["train"].status


def unavailable_tasks(config: dict) -> list[str]:
    """Configured tasks with no training data for this data source (reported, never run)."""
    return [t for t in config["tasks"] if task_status(config, t) == "unavailable"]


def ood_splits(config: dict) -> tuple[dict[str, list[str]], list[dict]]:
    """The OOD sets of ``ood.splits`` by availability: ``{task: [set, ...]}`` of those that
    are evaluated (their source task runs, on hub data), and ``{task, eval_split, reason}``
    for each other one, which ``aggregate`` lists as unavailable (never dropped silently)."""
    from kbert.tasks import OOD_SPLITS

    evaluated, unavailable = {}, []
    run = set(config["tasks"]) - set(unavailable_tasks(config))
    for name in config["ood"]["splits"]:
        task, ood = OOD_SPLITS[name]
        if task not in run:
            reason = f"{task} is not run in this preset"
        elif config["data"]["source"] != "hub":
            reason = f"no offline copy of {ood.label}"
        else:
            evaluated.setdefault(task, []).append(name)
            continue
        unavailable.append({"task": task, "eval_split": name, "reason": reason})
    return evaluated, unavailable


def dose_variant(epochs: int) -> str:
    """The task-KD variant of the ladder's dose-response point after ``epochs`` general-KD
    epochs: ``full_3ep`` runs like ``full`` from the student distilled for 3 epochs."""
    return f"full_{epochs}ep"


def general_kd_epochs_of(variant: str) -> int | None:
    """Nominal general-KD epochs of a variant: 0 for ``no_general_kd``, k for ``full_<k>ep``,
    None for the others (the config's general_kd budget)."""
    if variant == "no_general_kd":
        return 0
    match = DOSE_VARIANT.fullmatch(variant)
    return int(match.group(1)) if match else None


def check_variant(variant: str) -> None:
    if variant not in VARIANTS and not DOSE_VARIANT.fullmatch(variant):
        raise ValueError(f"unknown variant {variant!r}; variants: {list(VARIANTS)} or full_<k>ep (dose-response)")


def dump_resolved(config: dict) -> str:
    """The YAML text ``write_resolved`` writes (stable key order, with the config hash)."""
    header = (
        "# Resolved kbert config: the preset with every default filled in. Written by the\n"
        "# workflow; do not edit (edit config/*.yaml instead).\n"
        f"# config_hash: {config_hash(config)}\n"
    )
    return header + yaml.safe_dump(config, sort_keys=True, default_flow_style=False)


def write_resolved(config: dict, path: str | os.PathLike) -> bool:
    """Write the resolved config to ``path`` atomically, only if its content changed.

    Unchanged content leaves the file (and its mtime) alone. Returns True if written.
    """
    path = Path(path)
    text = dump_resolved(config)
    if path.exists() and path.read_text() == text:
        return False
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return True
