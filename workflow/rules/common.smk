# Config loading and validation, environment of every job, wildcard constraints, the
# job lists and path helpers. Every other .smk file only declares rules.

import ast
import copy
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from kbert import config as kconfig
from kbert.artifacts import config_hash
from kbert.tasks import TASKS as KNOWN_TASKS, get_task, is_glue


# ------------------------------------------------------------------ config
# `--configfile PRESET` replaces config/config.yaml instead of being merged into it
# (Snakemake would otherwise deep-merge the two, leaking default keys into the preset).
# `--config key=value` still applies on top.
_CONFIG_FILES = [str(f) for f in workflow.overwrite_configfiles] or ["config/config.yaml"]
if workflow.overwrite_configfiles:
    _cli_config = copy.deepcopy(workflow.config_settings.overwrite_config)
    config.clear()
    config.update(_cli_config)
    logger.info(f"kbert: config from {', '.join(_CONFIG_FILES)} only (not merged into config/config.yaml)")

try:
    _resolved = kconfig.load_config(
        config, schema_path=Path(workflow.basedir) / "schemas" / "config.schema.yaml"
    )
except kconfig.ConfigError as err:
    raise WorkflowError(f"{err}\n  (config files: {', '.join(_CONFIG_FILES)})") from None
config.clear()
config.update(_resolved)


def _impossible_students():
    """Students the teacher cannot be compressed into (shapes that do not divide its
    matrices, an unreachable target_compression): an error now, not in the compress job.
    It needs torch and transformers (seconds to import), hence here and not in
    kbert.config, and a passed check is remembered (per teacher, students and code)."""
    code = (Path(workflow.basedir).parent / "kbert" / "students.py").read_bytes()
    key = config_hash({"teacher": config["teacher"], "students": config["students"], "code": code})
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kbert" / "students-ok"
    if (cache / key).exists():
        return []
    from kbert.students import student_errors
    from kbert.teachers import teacher_architecture

    teacher = teacher_architecture(config["teacher"])
    errors = student_errors(teacher, config["students"]) if teacher is not None else []
    if not errors and teacher is not None:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / key).touch()
    return errors


_student_errors = _impossible_students()
if _student_errors:
    raise WorkflowError(
        "invalid config:\n  " + "\n  ".join(_student_errors) + f"\n  (config files: {', '.join(_CONFIG_FILES)})"
    )

PRESET = config["preset"]
WORK = f"{config['paths']['work']}/{PRESET}"
RESULTS = config["paths"]["results"]
FIGURES = config["paths"]["figures"] or f"figures/{PRESET}"
LOGS = f"{WORK}/logs"
BENCHMARKS = f"{WORK}/benchmarks"
EQUAL_SIZE_SPEED = f"{WORK}/bench/equal_size_speed.csv"  # rule bench_equal_size -> rule equal_size

# One file per config hash, so that another invocation on this work directory (with
# another config) never changes the file this one's jobs read. Written in `onstart`,
# which runs for a real run once it holds the lock: never by a dry run or a refused
# call. Which jobs a config change reruns is decided by each rule's `params.settings`,
# not by this file's name (see `resolved_config`).
RESOLVED = f"{WORK}/config.{config_hash(config)[:16]}.resolved.yaml"


onstart:
    kconfig.write_resolved(config, RESOLVED)



# ------------------------------------------------------------------ job environment
# Jobs run `python -m kbert.cli`: `python` is the interpreter running Snakemake (its
# environment has kbert's dependencies) and kbert is importable from this checkout.
_repo = str(Path(workflow.basedir).parent)
os.environ.update(
    {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(p for p in [_repo, os.environ.get("PYTHONPATH", "")] if p),
        "TOKENIZERS_PARALLELISM": "false",
    }
)
if config["offline"]:
    os.environ.update(
        {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    )


# ------------------------------------------------------------------ what runs
TASK_LIST = config["tasks"]
UNAVAILABLE = kconfig.unavailable_tasks(config)
RUN_TASKS = [t for t in TASK_LIST if t not in UNAVAILABLE]
# The paper's pipeline (`all`) runs the Kronecker students; low-rank and dense students
# exist for the equal-size comparison (`equal_size`), which also reruns the Kronecker
# students they match over more seeds.
ALL_STUDENTS = list(config["students"])
STUDENTS = [s for s in ALL_STUDENTS if config["students"][s]["family"] == "kronecker"]
VARIANTS = config["variants"]
SEEDS = config["seeds"]
ABLATION_TASKS = [t for t in config["ablation_tasks"] if t in RUN_TASKS]
ABLATION_STUDENTS = (
    STUDENTS if config["ablation_students"] is None else config["ablation_students"]
)
ABLATION_SEEDS = SEEDS if config["ablation_seeds"] is None else config["ablation_seeds"]
EQUAL_SIZE = config["equal_size"]
RES = {
    name: kconfig.resources(config, name)
    for name in (
        "finetune_teacher",
        "compress",
        "general_kd",
        "augment",
        "task_kd",
        "task_kd_start",
        "evaluate_ood",
        "aggregate",
        "report",
        "bench_models",
        "bench_layers",
    )
}



def job_resources(rule):
    """mem_mb, runtime and gpu of every job of `rule`, as `resources: **job_resources(name)`
    (its threads are `RES[name]["threads"]`), from the config's `resources` section with
    its `per_rule` overrides (kbert.config.resources)."""
    return {k: v for k, v in RES[rule].items() if k != "threads"}


wildcard_constraints:
    task="|".join(KNOWN_TASKS),
    student="|".join(ALL_STUDENTS),
    variant="|".join([*kconfig.VARIANTS, kconfig.DOSE_VARIANT.pattern]),
    model="|".join(["teacher", *ALL_STUDENTS]),
    run=r"teacher/[^/]+|task_kd/[^/]+/[^/]+/[^/]+/seed\d+",
    epochs=r"\d+",
    examples=r"\d+",
    seed=r"\d+",


def variant_tasks(variant):
    """Tasks a variant runs on: `full` on every available task, the others on the
    ablation tasks (`full_aug` on GLUE ones only: augmentation is sentence-level)."""
    if variant == "full":
        return RUN_TASKS
    if variant == "full_aug":
        return [t for t in ABLATION_TASKS if is_glue(t)]
    return ABLATION_TASKS


def variant_students(variant):
    return STUDENTS if variant == "full" else ABLATION_STUDENTS


def task_kd_seeds(student, task):
    """Table 6's cells (ablation students on ablation tasks, every variant) run
    `ablation_seeds`, so that each variant is a mean over the same seeds; the rest `seeds`."""
    return ABLATION_SEEDS if student in ABLATION_STUDENTS and task in ABLATION_TASKS else SEEDS


def task_kd_jobs():
    """(student, variant, task, seed) of every task-KD run, in a stable order."""
    return [
        (student, variant, task, seed)
        for variant in VARIANTS
        for student in variant_students(variant)
        for task in variant_tasks(variant)
        for seed in task_kd_seeds(student, task)
    ]


def equal_size_jobs():
    """(student, variant, task, seed) of the equal-size sweep: every listed student and the
    Kronecker students they match, on every listed task: `full` with that task's seeds,
    `no_general_kd` with `no_general_kd_seeds`."""
    listed = EQUAL_SIZE["students"]
    matched = [config["students"][s].get("match") for s in listed]
    students = list(dict.fromkeys(m for m in matched + listed if m))
    return [
        (student, variant, task, seed)
        for variant in ("full", "no_general_kd")
        for student in students
        for task in EQUAL_SIZE["tasks"]
        if task not in UNAVAILABLE
        for seed in equal_size_seeds(variant, task)
    ]


def equal_size_seeds(variant, task):
    if variant == "no_general_kd":
        return EQUAL_SIZE["no_general_kd_seeds"]
    return EQUAL_SIZE["per_task_seeds"].get(task, EQUAL_SIZE["seeds"])


def equal_size_start_jobs():
    """(student, variant, task, seed) whose starting point `task_kd_start` evaluates (with
    `equal_size.start_scores`): each (student, variant, task) of the sweep, with its first
    seed (the seed matters only to a narrower student's random head)."""
    if not EQUAL_SIZE["start_scores"]:
        return []
    first = {}
    for student, variant, task, seed in equal_size_jobs():
        first.setdefault((student, variant, task), seed)
    return [(*cell, seed) for cell, seed in first.items()]


def ladder_jobs():
    """(student, variant, task, seed) of every run of the sanity ladder."""
    ladder = config["ladder"]
    return [
        (student, variant, task, seed)
        for student in ladder["students"]
        for variant in ladder["variants"]
        for task in ladder["tasks"]
        if task not in UNAVAILABLE
        for seed in ladder["seeds"]
    ]


def dose_jobs():
    """(student, variant, task, seed) of the ladder's dose-response: each dose student after
    every number of general-KD epochs, and its no_general_kd run (the curve's 0)."""
    ladder = config["ladder"]
    variants = ["no_general_kd"] + [kconfig.dose_variant(k) for k in ladder["general_kd_epochs"]]
    return [
        (student, variant, task, seed)
        for student in ladder["dose_students"]
        for variant in variants
        for task in ladder["tasks"]
        if task not in UNAVAILABLE
        for seed in ladder["seeds"]
    ]


def augment_tasks():
    """Tasks whose augmented data some run needs (shared by all students)."""
    return sorted({task for _, variant, task, _ in task_kd_jobs() if variant == "full_aug"})


# ------------------------------------------------------------------ paths
def teacher_metrics(task):
    return f"{WORK}/teacher/{task}/metrics.json"


def student_stage(student, stage):
    """Model dir and metrics of a student after `init` (SVD) or `general` (general KD)."""
    return {
        "model": f"{WORK}/students/{student}/{stage}/model",
        "metrics": f"{WORK}/students/{student}/{stage}/metrics.json",
    }


def task_kd_metrics(student, variant, task, seed):
    return f"{WORK}/task_kd/{student}/{variant}/{task}/seed{seed}/metrics.json"


def task_kd_start_metrics(student, variant, task, seed):
    return f"{WORK}/task_kd_start/{student}/{variant}/{task}/seed{seed}/metrics.json"


# Out-of-distribution sets (Table 9) evaluated by `all`, by source task; the others are
# listed as unavailable by aggregate (kbert.config.ood_splits).
OOD_TASKS = list(kconfig.ood_splits(config)[0])


def ood_runs():
    """Run dirs (under WORK) whose models are evaluated on their task's OOD sets: each OOD
    task's teacher and its `full` task-KD runs of the paper's students, every seed."""
    return [f"teacher/{task}" for task in OOD_TASKS] + [
        f"task_kd/{student}/{variant}/{task}/seed{seed}"
        for student, variant, task, seed in task_kd_jobs()
        if variant == "full" and task in OOD_TASKS
    ]


def run_metrics():
    """Every evaluated model's metrics.json: fine-tuned teachers, task-KD runs, then the
    OOD evaluations of some of them."""
    return (
        [teacher_metrics(t) for t in RUN_TASKS]
        + [task_kd_metrics(*job) for job in task_kd_jobs()]
        + [f"{WORK}/ood/{run}/metrics.json" for run in ood_runs()]
    )


def submission_tasks():
    """Tasks of `all` whose data source has GLUE test splits (offline: MRPC, MNLI's AX)."""
    return [
        t
        for t in RUN_TASKS
        if get_task(t).available_test_splits(kconfig.settings(config, "data", task=t)["source"])
    ]


# The models whose GLUE test-server files `all` writes: the teacher and the paper's
# students, each from its `full` run with the first seed.
SUBMISSION_MODELS = ["teacher", *STUDENTS] if submission_tasks() else []


def submission_runs(wildcards):
    if wildcards.model == "teacher":
        return [teacher_metrics(t) for t in submission_tasks()]
    return [task_kd_metrics(wildcards.model, "full", t, SEEDS[0]) for t in submission_tasks()]


def equal_size_metrics():
    """Teachers of the sweep's tasks, every sweep run, and each student's SVD init (its
    initialisation error per matrix group is the table's last block)."""
    tasks = sorted({task for _, _, task, _ in equal_size_jobs()})
    students = sorted({student for student, _, _, _ in equal_size_jobs()})
    return (
        [teacher_metrics(t) for t in tasks]
        + [task_kd_metrics(*job) for job in equal_size_jobs()]
        + [student_stage(s, "init")["metrics"] for s in students]
    )


def equal_size_start_metrics():
    """The task_kd_start records of the sweep (none without `equal_size.start_scores`)."""
    return [task_kd_start_metrics(*job) for job in equal_size_start_jobs()]


def starts_arg(wildcards, input):
    return "--starts " + " ".join(map(shlex.quote, input.starts)) if input.starts else ""


def ladder_metrics():
    """Teachers of the ladder's tasks, every ladder run, and each student's SVD init (its
    initialisation error is a column of the ladder)."""
    jobs = list(dict.fromkeys(ladder_jobs() + dose_jobs()))
    tasks = sorted({task for _, _, task, _ in jobs})
    students = sorted({student for student, _, _, _ in jobs})
    return (
        [teacher_metrics(t) for t in tasks]
        + [task_kd_metrics(*job) for job in jobs]
        + [student_stage(s, "init")["metrics"] for s in students]
    )


def init_stage(variant):
    """The student stage a task-KD variant starts from: `init` (the SVD init) for
    no_general_kd, `general_<k>ep` for the dose-response's full_<k>ep, else `general`."""
    epochs = kconfig.general_kd_epochs_of(variant)
    if epochs is None:
        return "general"
    return "init" if epochs == 0 else f"general_{epochs}ep"


def previous_dose_point(wildcards):
    """The ladder.general_kd_epochs point before `epochs` (0: the SVD init)."""
    return max((k for k in config["ladder"]["general_kd_epochs"] if k < int(wildcards.epochs)), default=0)


def dose_init(wildcards):
    """Where the dose-response's general KD to `epochs` starts: the previous point of
    ladder.general_kd_epochs, or the SVD init for the first."""
    previous = previous_dose_point(wildcards)
    student = student_stage(wildcards.student, f"general_{previous}ep" if previous else "init")
    return {"init_model": student["model"], "init_metrics": student["metrics"]}


def dose_more_epochs(wildcards):
    """Epochs the dose-response job adds to its starting point."""
    return f"--epochs {int(wildcards.epochs) - previous_dose_point(wildcards)}"


def task_kd_inputs(wildcards):
    """Initial student (general KD, or the SVD init for no_general_kd), fine-tuned
    teacher (teacher logits and the task head), augmented rows for full_aug."""
    student = student_stage(wildcards.student, init_stage(wildcards.variant))
    inputs = {
        "init_model": student["model"],
        "init_metrics": student["metrics"],
        "teacher_model": f"{WORK}/teacher/{wildcards.task}/model",
        "teacher_metrics": teacher_metrics(wildcards.task),
    }
    if wildcards.variant == "full_aug":
        inputs["augmented"] = f"{WORK}/augment/{wildcards.task}.parquet"
    return inputs


def resolved_config(wildcards, output):
    """A params function: the resolved config's path. Taking `output` makes Snakemake
    count it as derived from the outputs, so that its name (a new hash for every config
    change) is not a params rerun trigger."""
    return RESOLVED


def augmented_arg(wildcards, input):
    return f"--augmented {shlex.quote(input.augmented)}" if "augmented" in input.keys() else ""


def launcher(rule):
    """How a training job starts: `python`, or `torchrun` with one process per GPU when the
    rule gets several (`resources.gpu` > 1; data parallelism inside the job, kbert/device.py)."""
    gpus = RES[rule]["gpu"]
    return "python" if gpus <= 1 else f"torchrun --standalone --nproc_per_node {gpus}"


def parent_of(name):
    """A params function: the directory holding input or output file `name`."""

    def parent(wildcards, input, output):
        files = dict(input.items())
        files.update(output.items())
        return os.path.dirname(files[name])

    return parent


# ------------------------------------------------------------------ rerun fingerprints
# A job reruns when the settings it depends on change (Snakemake's params trigger),
# not when unrelated keys of the config change. Upstream changes propagate by mtime.
def _stage_sections(path):
    """CONFIG_SECTIONS of a stage module, read from its source: importing a stage would
    import torch and transformers, seconds for every snakemake call (dry runs too)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["CONFIG_SECTIONS"]:
            return ast.literal_eval(node.value)
    raise WorkflowError(f"{path}: no CONFIG_SECTIONS = (...) of literal section names")


STAGE_SECTIONS = {
    path.stem: _stage_sections(path)
    for path in (Path(workflow.basedir).parent / "kbert" / "stages").glob("*.py")
    if path.stem != "__init__"
}


def fingerprint(stage):
    """A params function: short hash of what one job of `stage` depends on: the teacher and
    the stage's CONFIG_SECTIONS (kbert.config.settings_fingerprint, which the job's
    metrics.json records too); the bench rules: the bench settings and every student."""

    def compute(wildcards):
        if stage == "bench":
            return config_hash({**kconfig.teacher_identity(config), "bench": config["bench"],
                                "students": config["students"]})[:16]
        return kconfig.settings_fingerprint(config, STAGE_SECTIONS[stage], task=wildcards.get("task"),
                                            student=wildcards.get("student"))

    return compute
