"""The Snakemake workflow: dry runs of every preset build the expected DAG, a bad config
stops Snakemake before any job with the key named, and the workflow lints clean.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from pathlib import Path

import pytest
import yaml

from kbert.config import load_config
from helpers import CONFIGS, REPO, resolved_path, run_workflow


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule from the first 'Job stats' table of a Snakemake run."""
    lines = output.splitlines()
    start = lines.index("Job stats:")
    counts = {}
    for line in lines[start + 3:]:
        name, _, count = line.strip().rpartition(" ")
        if name.strip() == "total":
            break
        counts[name.strip()] = int(count)
    return counts


def shell_commands(output: str) -> list[str]:
    return [line.split("Shell command: ", 1)[1] for line in output.splitlines() if "Shell command: " in line
            and not line.endswith("Shell command: None")]


# Jobs per rule for each shipped preset (see docs/presets.md for the arithmetic).
EXPECTED = {
    "config/config.yaml": {
        # 10 available tasks (QQP has no offline data), 2 students; task KD: full on
        # 10 tasks x 2 students + 2 ablation variants x 3 tasks x KroneckerBERT_8 only; no
        # augmentation (config/augment.yaml adds it).
        # GLUE server files: the teacher and both students (offline test splits: MRPC, AX).
        "finetune_teacher": 10, "compress": 2, "general_kd": 2, "task_kd": 26,
        "glue_submission": 3, "aggregate": 1, "report": 1, "bench_models": 1, "bench_layers": 1, "all": 1,
    },
    "config/paper.yaml": {
        # 10 tasks, 2 students, 3 seeds; ablations on 3 tasks for KroneckerBERT_8 only:
        # 10 x 2 x 3 + 2 x 3 x 1 x 3 = 78 task-KD runs, no augmentation.
        # Table 9: MRPC, SST-2 and RTE's teacher and full runs on PAWS, IMDb, HANS: 3 x (1 + 2 x 3) = 21.
        "finetune_teacher": 10, "compress": 2, "general_kd": 2, "task_kd": 78, "glue_submission": 3,
        "evaluate_ood": 21, "aggregate": 1, "report": 1, "bench_models": 1, "bench_layers": 1, "all": 1,
    },
    "config/quick.yaml": {
        # 2 tasks x 2 students, the full variant only; MRPC's test split: 3 server-file sets.
        "finetune_teacher": 2, "compress": 2, "general_kd": 2, "task_kd": 4, "glue_submission": 3,
        "aggregate": 1, "report": 1, "bench_models": 1, "bench_layers": 1, "all": 1,
    },
    "config/smoke.yaml": {
        # 3 tasks x 2 students + 3 ablation variants x 1 task x 2 students = 12.
        "finetune_teacher": 3, "compress": 2, "general_kd": 2, "augment": 1, "task_kd": 12,
        "glue_submission": 3, "aggregate": 1, "report": 1, "bench_models": 1, "bench_layers": 1, "all": 1,
    },
}


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """One dry run per preset, shared by the tests below."""
    runs = {}
    for preset in EXPECTED:
        workdir = tmp_path_factory.mktemp(Path(preset).stem)
        proc = run_workflow(workdir, None if preset == "config/config.yaml" else preset)
        assert proc.returncode == 0, proc.out[-3000:]
        runs[preset] = (workdir, proc)
    return runs


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_dry_run_job_counts(dry_runs, preset):
    _, proc = dry_runs[preset]
    assert job_counts(proc.out) == EXPECTED[preset]


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_every_stage_goes_through_the_cli(dry_runs, preset):
    workdir, proc = dry_runs[preset]
    commands = shell_commands(proc.out)
    resolved = resolved_path(preset)
    for command in commands:
        assert command.startswith("python -m kbert.cli "), command
        assert f"--config {resolved} " in command, command
    stages = Counter(re.match(r"python -m kbert\.cli (bench \w+|[\w-]+)", c).group(1) for c in commands)
    expected = EXPECTED[preset]
    assert stages == {k: v for k, v in {
        "finetune-teacher": expected["finetune_teacher"], "compress": expected["compress"],
        "general-kd": expected["general_kd"], "augment": expected.get("augment", 0),
        "task-kd": expected["task_kd"], "glue-submission": expected.get("glue_submission", 0),
        "evaluate-ood": expected.get("evaluate_ood", 0), "aggregate": 1, "report": 1,
        "bench models": 1, "bench layers": 1}.items() if v}


def test_default_dag_variants_and_unavailable_tasks(dry_runs):
    _, proc = dry_runs["config/config.yaml"]
    commands = shell_commands(proc.out)
    task_kd = [dict(re.findall(r"--(task|student|variant|seed) (\S+)", c)) for c in commands if " task-kd " in c]
    by_variant = Counter(run["variant"] for run in task_kd)
    assert by_variant == {"full": 20, "no_general_kd": 3, "no_task_kd": 3}
    assert {r["task"] for r in task_kd if r["variant"] != "full"} == {"mrpc", "sst2", "mnli"}
    # QQP has no offline data: no job mentions it (aggregate reads it from the config
    # through kbert.config.unavailable_tasks and lists it as unavailable).
    assert not [c for c in commands if "qqp" in c]
    aggregate = next(c for c in commands if " aggregate " in c)
    assert aggregate.count("metrics.json") == 10 + 26
    assert not [c for c in commands if "--augmented " in c]
    no_gkd = next(c for c in commands if "--variant no_general_kd" in c)
    assert re.search(r"--init work/default/students/\w+/init ", no_gkd)


def test_augment_overlay_adds_augmentation_and_full_aug_runs(tmp_path):
    """config/augment.yaml on the default: one augment job per ablation task, and the
    full_aug runs (only they) read its augmented file."""
    overlay = ("--configfile", str(REPO / "config" / "config.yaml"), str(REPO / "config" / "augment.yaml"),
               "--printshellcmds")   # an option after the files ends --configfile's list
    proc = run_workflow(tmp_path, extra=overlay)
    assert proc.returncode == 0, proc.out[-3000:]
    counts = job_counts(proc.out)
    assert (counts["augment"], counts["task_kd"]) == (3, 29)
    task_kd = [c for c in shell_commands(proc.out) if " task-kd " in c]
    assert sum("--variant full_aug" in c for c in task_kd) == 3
    for command in task_kd:
        assert ("--augmented " in command) == ("--variant full_aug" in command)


def test_paper_dag_lists_the_ood_jobs_and_aggregates_them(dry_runs):
    """Table 9: each of MRPC, SST-2 and RTE's teacher and `full` task-KD runs (both students,
    every seed) is evaluated on its task's OOD set, and aggregate reads every evaluation."""
    _, proc = dry_runs["config/paper.yaml"]
    commands = shell_commands(proc.out)
    runs = {re.search(r"--run work/paper/(\S+) ", c).group(1): re.search(r"--out (\S+) ", c).group(1)
            for c in commands if " evaluate-ood " in c}
    expected = {f"teacher/{task}" for task in ("mrpc", "sst2", "rte")} | {
        f"task_kd/{student}/full/{task}/seed{seed}" for student in ("kroneckerbert_8", "kroneckerbert_21")
        for task in ("mrpc", "sst2", "rte") for seed in (0, 1, 2)}
    assert set(runs) == expected
    assert all(out == f"work/paper/ood/{run}" for run, out in runs.items())
    aggregate = next(c for c in commands if " aggregate " in c)
    assert sum(f"work/paper/ood/{run}/metrics.json" in aggregate for run in expected) == 21
    # Offline presets run no OOD job: aggregate lists the sets as unavailable.
    for preset in ("config/config.yaml", "config/quick.yaml", "config/smoke.yaml"):
        assert not [c for c in shell_commands(dry_runs[preset][1].out) if " evaluate-ood " in c], preset


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_commands_parse_with_the_cli(dry_runs, preset):
    """Every job's command line is accepted by kbert.cli's argument parser."""
    cli = pytest.importorskip("kbert.cli")
    _, proc = dry_runs[preset]
    parser = cli.build_parser()
    for command in shell_commands(proc.out):
        argv = shlex.split(command.split(" > ", 1)[0])[3:]      # drop `python -m kbert.cli`
        args = parser.parse_args(argv)
        if args.stage == "task-kd":
            assert (args.augmented is not None) == (args.variant == "full_aug")
        if args.stage != "bench":
            assert args.threads >= 1


def test_preset_replaces_the_default_config(dry_runs):
    """--configfile config/paper.yaml is not merged into config/config.yaml: the jobs read
    the resolved config whose hash is that of the preset alone."""
    for preset, (_, proc) in dry_runs.items():
        for command in shell_commands(proc.out):
            assert f"--config {resolved_path(preset)} " in command, command


def test_dry_run_writes_no_resolved_config(dry_runs):
    """A dry run (or a call refused by the lock) must not write the file a running job reads."""
    for preset, (workdir, _) in dry_runs.items():
        assert not list(workdir.glob("**/*resolved.yaml")), preset


def test_two_configs_on_one_work_directory_read_their_own_file(dry_runs):
    """Another config on the same work directory resolves to another file, so it never
    changes what the first invocation's later jobs read."""
    workdir, first = dry_runs["config/smoke.yaml"]
    other = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    other["task_kd"]["lr"] = 5.0e-4
    (workdir / "other.yaml").write_text(yaml.safe_dump(other))
    second = run_workflow(workdir, workdir / "other.yaml")
    assert second.returncode == 0, second.out[-2000:]
    configs = [{re.search(r"--config (\S+)", c).group(1) for c in shell_commands(p.out)} for p in (first, second)]
    assert configs[0] == {resolved_path("config/smoke.yaml")}
    assert len(configs[1]) == 1 and configs[1] != configs[0]


def test_paths_with_spaces_are_quoted(tmp_path):
    """paths.work with a space: every path reaches the CLI as one argument, the log too."""
    raw = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    raw["paths"]["work"] = "my work"
    (tmp_path / "spaced.yaml").write_text(yaml.safe_dump(raw))
    proc = run_workflow(tmp_path, tmp_path / "spaced.yaml")
    assert proc.returncode == 0, proc.out[-2000:]
    parser = pytest.importorskip("kbert.cli").build_parser()
    for command in shell_commands(proc.out):
        argv = shlex.split(command)
        assert argv[-3] == ">" and argv[-2].startswith("my work/smoke/logs/"), command
        args = parser.parse_args(argv[3:-3])
        if args.stage != "bench":
            assert args.config.startswith("my work/smoke/config."), command
        for value in (getattr(args, k, None) for k in ("out", "init", "teacher", "augmented")):
            assert value is None or value.startswith(("my work/", "work/")), command


def test_bad_config_fails_before_any_job(tmp_path):
    bad = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    bad["teacher"]["source"] = "hf"
    bad["task_kd"]["epoch"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = run_workflow(tmp_path / "run", path)
    assert proc.returncode != 0
    assert "config.teacher.source: 'hf' is not one of ['packaged', 'hub', 'random']" in proc.out
    assert "config.task_kd: unknown key 'epoch' (did you mean 'epochs'?)" in proc.out
    assert "Job stats" not in proc.out and "Shell command" not in proc.out
    assert not (tmp_path / "run" / "work").exists()


def test_lint_is_clean(tmp_path):
    proc = run_workflow(tmp_path, None, targets=(), dryrun=False, extra=["--lint"])
    assert proc.returncode == 0, proc.out[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in proc.out


# The equal-size sweep (target `equal_size`): 6 students (4 baselines + the 2 Kronecker
# students they match); default: 6 GLUE tasks, 5 seeds on CoLA/MRPC/STS-B, else 3, plus
# one no_general_kd run per (student, task) and a start-of-task-KD evaluation of each
# (student, variant, task).
EXPECTED_EQUAL_SIZE = {
    "config/config.yaml": {"finetune_teacher": 6, "compress": 6, "general_kd": 6,
                           "task_kd": 6 * (3 * 5 + 3 * 3) + 6 * 6, "task_kd_start": 6 * 6 * 2,
                           "bench_equal_size": 1, "equal_size": 1},
    "config/paper.yaml": {"finetune_teacher": 10, "compress": 6, "general_kd": 6,
                          "task_kd": 6 * (4 * 5 + 6 * 3) + 6 * 10, "task_kd_start": 6 * 10 * 2,
                          "bench_equal_size": 1, "equal_size": 1},
    "config/smoke.yaml": {"finetune_teacher": 2, "compress": 3, "general_kd": 3,
                          "task_kd": 3 * (3 + 2) + 3 * 2, "task_kd_start": 3 * 2 * 2,
                          "bench_equal_size": 1, "equal_size": 1},
}


@pytest.mark.parametrize("preset", sorted(EXPECTED_EQUAL_SIZE))
def test_equal_size_sweep_lists_every_family_budget_task_seed(tmp_path, preset):
    proc = run_workflow(tmp_path, None if preset == "config/config.yaml" else preset, targets=("equal_size",))
    assert proc.returncode == 0, proc.out[-3000:]
    assert job_counts(proc.out) == EXPECTED_EQUAL_SIZE[preset]
    config = load_config(REPO / preset)
    students, sweep = config["students"], config["equal_size"]
    runs = {tuple(dict(re.findall(r"--(task|student|variant|seed) (\S+)", c)).get(k) for k in
                  ("student", "variant", "task", "seed"))
            for c in shell_commands(proc.out) if " task-kd " in c}
    expected = set()
    for name in sweep["students"]:
        for student in (name, students[name]["match"]):
            for task in sweep["tasks"]:
                for seed in sweep["per_task_seeds"].get(task, sweep["seeds"]):
                    expected.add((student, "full", task, str(seed)))
                for seed in sweep["no_general_kd_seeds"]:
                    expected.add((student, "no_general_kd", task, str(seed)))
    assert runs == expected
    # The start of task KD: each (student, variant, task) once, with the task's first seed,
    # from the same init as its task-KD runs.
    starts = [(dict(re.findall(r"--(task|student|variant|seed|init) (\S+)", c))) for c in shell_commands(proc.out)
              if " task-kd-start " in c]
    first_seed = {}
    for student, variant, task, seed in sorted(expected, key=lambda r: int(r[3])):
        first_seed.setdefault((student, variant, task), seed)
    assert {(d["student"], d["variant"], d["task"], d["seed"]) for d in starts} == {
        (*cell, seed) for cell, seed in first_seed.items()}
    assert all(Path(d["init"]).name == ("init" if d["variant"] == "no_general_kd" else "general") for d in starts)
    families = {students[s]["family"] for s, *_ in runs}
    assert families == {"kronecker", "lowrank", "dense"}
    # Every baseline is compressed against its own budget: one compress job per student.
    compressed = {re.search(r"--student (\S+)", c).group(1) for c in shell_commands(proc.out) if " compress " in c}
    assert compressed == {s for s, *_ in runs}


def test_ladder_lists_every_rung_task_and_variant(tmp_path):
    """config/ladder.yaml, target `ladder`: every rung x 2 tasks from the SVD init, one
    teacher per task, one compress job per student, the dose-response (KroneckerBERT_8 and
    the dense (random and selected init) and low-rank students of its size after 1, 3, 10
    general-KD epochs: a chain of 3 general-KD jobs each, then task KD from each) and the
    ladder's own report job."""
    proc = run_workflow(tmp_path, "config/ladder.yaml", targets=("ladder",))
    assert proc.returncode == 0, proc.out[-3000:]
    ladder = load_config(REPO / "config" / "ladder.yaml")["ladder"]
    dose = ladder["general_kd_epochs"]
    rungs, dosed = len(ladder["students"]), ladder["dose_students"]
    assert rungs == 13 and dosed == ["kroneckerbert_8", "tinybert_8", "lowrank_8", "tinybert_8_selected"]
    assert job_counts(proc.out) == {"finetune_teacher": 2, "compress": rungs, "general_kd_dose": 4 * len(dose),
                                    "task_kd": 2 * (rungs + 4 * len(dose)), "ladder": 1}
    runs = {tuple(dict(re.findall(r"--(task|student|variant) (\S+)", c)).get(k) for k in ("student", "variant", "task"))
            for c in shell_commands(proc.out) if " task-kd " in c}
    assert runs == ({(s, "no_general_kd", t) for s in ladder["students"] for t in ladder["tasks"]}
                    | {(s, f"full_{k}ep", t) for s in dosed for k in dose for t in ladder["tasks"]})
    chain = [re.search(r"--init (\S+) .*--epochs (\d+)", c).groups()
             for c in shell_commands(proc.out) if " general-kd " in c]
    assert sorted((Path(init).parent.name, Path(init).name, int(more)) for init, more in chain) == [
        (s, *link) for s in sorted(dosed) for link in (("general_1ep", 2), ("general_3ep", 7), ("init", 1))]


def test_learning_curve_runs_one_teacher_per_point(tmp_path):
    """config/ladder.yaml, target `learning_curve`: the teacher on each listed size."""
    proc = run_workflow(tmp_path, "config/ladder.yaml", targets=("learning_curve",))
    assert proc.returncode == 0, proc.out[-3000:]
    curve = load_config(REPO / "config" / "ladder.yaml")["learning_curve"]
    expected = {(t, n) for t in curve["tasks"] for n in curve["per_task"].get(t, curve["train_examples"])}
    points = {(re.search(r"--task (\S+)", c).group(1), int(re.search(r"--max-train-examples (\d+)", c).group(1)))
              for c in shell_commands(proc.out) if " finetune-teacher " in c}
    assert points == expected and job_counts(proc.out) == {"teacher_curve": len(expected), "learning_curve": 1}


def test_impossible_students_fail_before_any_job(tmp_path):
    """Shapes that do not divide the teacher's matrices, an embedding factor that does not
    divide its hidden size, an unreachable target_compression: refused by `snakemake -n`."""
    bad = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    bad["students"].update(
        kron_4={"family": "kronecker", "target_compression": 400},
        kron_explicit={"family": "kronecker", "attention_a_shape": [4, 4], "ffn_a_shape": [5, 2], "embedding_n": 8},
        kron_embedding={"family": "kronecker", "attention_a_shape": [4, 4], "ffn_a_shape": [4, 2], "embedding_n": 7},
    )
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = run_workflow(tmp_path / "run", path)
    assert proc.returncode != 0
    assert "config.students.kron_4: no shapes reach compression 400.0" in proc.out
    assert "config.students.kron_explicit: ffn_a_shape [5, 2] does not divide the teacher's 64 x 32 matrices" in proc.out
    assert "config.students.kron_embedding: embedding_n 7 does not divide the teacher's hidden size 32" in proc.out
    assert "Job stats" not in proc.out and "Shell command" not in proc.out


def test_ablation_seeds_cover_every_variant_of_table_6s_cells(tmp_path):
    """`ablation_seeds`: the ablation students on the ablation tasks run every variant,
    full included, over those seeds (Table 6 as mean +- sd over the same seeds); every
    other run keeps `seeds`."""
    raw = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    raw["ablation_seeds"] = [0, 1, 2]
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = run_workflow(tmp_path, path)
    assert proc.returncode == 0, proc.out[-3000:]
    config = load_config(path)
    runs = [tuple(dict(re.findall(r"--(task|student|variant|seed) (\S+)", c)).get(k)
                  for k in ("student", "variant", "task", "seed"))
            for c in shell_commands(proc.out) if " task-kd " in c]
    ablation_students = config["ablation_students"] or [s for s, spec in config["students"].items()
                                                        if spec["family"] == "kronecker"]
    for student, variant, task, seed in runs:
        in_table_6 = student in ablation_students and task in config["ablation_tasks"]
        assert (seed in {"0", "1", "2"}) if in_table_6 else seed == str(config["seeds"][0])
    for student in ablation_students:
        for variant in config["variants"]:
            for task in config["ablation_tasks"]:
                seeds = {s for st, v, t, s in runs if (st, v, t) == (student, variant, task)}
                assert seeds == {"0", "1", "2"}, (student, variant, task)
