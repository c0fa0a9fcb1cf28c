"""Errors a user can cause get one clear line, and interruptions leave nothing behind
(docs/reliability.md lists the cases): the by-hand CLI, the data check, atomic writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from kbert import cli
from kbert.data import files, splits
from kbert.artifacts import atomic_path, sha256_file
from helpers import CONFIGS, REPO

SMOKE = str(CONFIGS / "smoke.yaml")


def _python(code: str, **env) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (nothing imported yet), from the repository root."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**clean, **env})


# ---------------------------------------------------------------------------- offline (case 3)


def test_cli_is_offline_before_huggingface_hub_is_imported():
    """huggingface_hub reads HF_HUB_OFFLINE once, at import: it must be set by then."""
    proc = _python(
        "import os, sys\n"
        "def hook(event, args):\n"
        "    if event == 'import' and args[0] == 'huggingface_hub':\n"
        "        print('HF_HUB_OFFLINE at import:', os.environ.get('HF_HUB_OFFLINE'), flush=True)\n"
        "        os._exit(0)\n"
        "sys.addaudithook(hook)\n"
        "from kbert import cli\n"
        f"cli.main(['compress', '--config', {SMOKE!r}, '--student', 'kron_4', '--out', 'unused'])\n"
    )
    assert proc.stdout == "HF_HUB_OFFLINE at import: 1\n", proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- one line per error (case 5)


@pytest.mark.parametrize("error", [
    "kbert.training.NonFiniteLoss('task KD: non-finite loss nan at step 3; lower the learning rate')",
    "kbert.data.hub.HubOfflineError('source=hub needs glue from the Hugging Face Hub, but HF_HUB_OFFLINE is set')",
])
def test_user_errors_are_one_line_without_traceback(monkeypatch, capsys, tmp_path, error):
    import kbert.data.hub
    import kbert.stages.compress
    import kbert.training

    exception = eval(error, {"kbert": kbert})

    def fail(*args):
        raise exception

    monkeypatch.setattr(kbert.stages.compress, "run", fail)
    argv = ["compress", "--config", SMOKE, "--student", "kron_4", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"kbert compress: error: {exception}\n"
    with pytest.raises(type(exception)):
        cli.main([*argv, "--debug"])


def test_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: smoke\ntasks: [mrpc\nstudents: {}\n")
    assert cli.main(["compress", "--config", str(bad), "--student", "x", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kbert compress: error: config: {bad}, line 3, column 9: not valid YAML")
    assert err.count("\n") == 1


def _private_data(tmp_path, *relpaths):
    for rel in relpaths:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((files.data_root() / rel).read_bytes())
    return tmp_path


def _write_sums(root):
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    (root / "SHA256SUMS").write_text("".join(f"{sha256_file(root / r)}  {r}\n" for r in files))


def test_parquet_that_is_not_parquet_names_the_file(tmp_path):
    rel = "glue/WNLI/validation.parquet"
    root = _private_data(tmp_path, rel)
    (root / rel).write_bytes(b"PAR1 this is not parquet at all PAR1")
    _write_sums(root)
    with pytest.raises(files.DataError, match=r"WNLI/validation\.parquet: not a readable parquet file"):
        splits.load_split("wnli", "validation", data_dir=root)


def test_empty_tsv_names_the_file(tmp_path):
    rel = "glue/MNLI/textfooler_mismatched.tsv"
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_text("")
    _write_sums(tmp_path)
    with pytest.raises(files.DataError, match=r"textfooler_mismatched\.tsv is empty"):
        files._read_tsv(tmp_path / rel, None)
    with pytest.raises(files.DataError, match=r"textfooler_mismatched\.tsv is empty"):
        splits.load_split("mnli", "validation_mismatched", data_dir=tmp_path)


def test_data_check_of_one_task_reads_only_its_files_and_lists_every_bad_one(tmp_path, monkeypatch, capsys):
    files = ["glue/WNLI/train.parquet", "glue/WNLI/validation.parquet"]
    root = _private_data(tmp_path, *files)      # no other task's files at all
    _write_sums(root)
    monkeypatch.setenv("KBERT_DATA_DIR", str(root))
    assert cli.main(["data", "--task", "wnli"]) == 0
    assert "wnli" in capsys.readouterr().out
    for rel in files:
        (root / rel).write_bytes(b"garbage")
    assert cli.main(["data", "--task", "wnli"]) == 2
    err = capsys.readouterr().err
    assert all(f"{root / rel} is corrupt or altered" in err for rel in files), err


def test_data_check_covers_the_general_kd_corpus(tmp_path, monkeypatch, capsys):
    rel = "wikitext2/valid.txt"
    root = _private_data(tmp_path, rel)
    _write_sums(root)
    (root / rel).write_text("altered")
    monkeypatch.setattr(splits, "describe_tasks", lambda *args, **kwargs: splits.pd.DataFrame())
    monkeypatch.setenv("KBERT_DATA_DIR", str(root))
    assert cli.main(["data"]) == 2
    assert f"{root / rel} is corrupt or altered" in capsys.readouterr().err


# ---------------------------------------------------------------------------- interruptions (case 7)


def test_killed_writer_temporaries_are_removed_on_the_next_write(tmp_path):
    stale = tmp_path / ".model.999999999.abcdefgh"     # a writer that no longer runs
    live = tmp_path / f".model.{os.getpid()}.abcdefgh"  # one that still does
    for path in (stale, live):
        (path / "model").mkdir(parents=True)
    with atomic_path(tmp_path / "model") as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "model"])


def test_sigterm_is_reported_as_an_interruption():
    proc = _python(
        "import os, signal, time\n"
        "from kbert import cli\n"
        "def stage(args, config=None):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "cli.cmd_data = stage\n"
        "raise SystemExit(cli.main(['data']))\n"
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert proc.stderr == "kbert data: interrupted (SIGTERM); run it again to resume from its last checkpoint\n"


def test_output_of_another_model_is_a_clear_error(tmp_path, capsys):
    """--init of another student, --teacher of another task: one line naming the directory."""
    for name, metrics in {"init": {"student": "kron_explicit"}, "teacher": {"task": "mrpc"}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    argv = ["task-kd", "--config", SMOKE, "--task", "mrpc", "--student", "kron_4", "--variant", "full",
            "--seed", "0", "--init", str(tmp_path / "init"), "--teacher", str(tmp_path / "teacher"),
            "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        f"kbert task-kd: error: {tmp_path / 'init'} holds the output for student 'kron_explicit', not 'kron_4' "
        f"(see {tmp_path / 'init' / 'metrics.json'}): pass that stage's output for 'kron_4'\n")
    argv[argv.index("--task") + 1] = "stsb"
    argv[argv.index("--student") + 1] = "kron_explicit"
    assert cli.main(argv) == 2
    assert "holds the output for task 'mrpc', not 'stsb'" in capsys.readouterr().err
