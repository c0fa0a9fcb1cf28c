"""Helpers shared by several test modules (import them: ``from helpers import REPO``).

pytest puts tests/ on ``sys.path`` for tests/conftest.py (rootdir-relative, "prepend"
import mode), so test modules at any depth import this module by its plain name.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from kbert.students import compress
from kbert.artifacts import config_hash
from kbert.config import load_config
from kbert.modeling import KBertConfig, KBertForSequenceClassification

# --------------------------------------------------------------------------------------
# The repository and its workflow
# --------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "workflow" / "Snakefile"
CONFIGS = REPO / "config"


def run_workflow(workdir: Path, configfile: str | Path | None = None, targets=("all",), *,
                 dryrun: bool = True, cores: int = 2, extra=(), timeout: float = 120):
    """Run Snakemake on this repository's workflow with ``workdir`` as working directory.

    ``config/`` is copied into ``workdir`` (the default ``configfile:`` is relative to
    the working directory), so outputs (``work/``, ``results/``, ``figures/``) land in
    ``workdir`` and never in the checkout. ``configfile`` is a preset path (relative to
    the repository or absolute); None uses config/config.yaml. Returns the
    CompletedProcess; ``.out`` holds stdout + stderr.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "config").exists():
        shutil.copytree(CONFIGS, workdir / "config")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
           "--cores", str(cores), "--printshellcmds"]
    if configfile is not None:
        path = Path(configfile)
        # "=" form: --configfile takes several values and would swallow the targets.
        cmd.append(f"--configfile={path if path.is_absolute() else REPO / path}")
    if dryrun:
        cmd.append("--dry-run")
    cmd += [*extra, *targets]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    proc.out = proc.stdout + proc.stderr
    return proc


def resolved_path(preset) -> str:
    """Where a run of ``preset`` writes its resolved config (one file per config hash)."""
    config = load_config(REPO / preset)
    return f"{config['paths']['work']}/{config['preset']}/config.{config_hash(config)[:16]}.resolved.yaml"


# --------------------------------------------------------------------------------------
# The real stages on the smoke preset (golden losses, resume)
# --------------------------------------------------------------------------------------

SMOKE_TASK, SMOKE_STUDENT = "mrpc", "kron_4"


def smoke_config(**task_kd) -> dict:
    """config/smoke.yaml, validated; ``task_kd`` overrides keys of its task_kd section."""
    raw = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    raw["task_kd"].update(task_kd)
    return load_config(raw)


@contextlib.contextmanager
def one_thread():
    """Torch on one thread: float sums depend on how they are split over threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def smoke_inputs(config: dict, workdir: Path) -> tuple[Path, Path]:
    """What task KD starts from: (fine-tuned MRPC teacher, SVD-initialised kron_4), run
    through the finetune-teacher and compress stages into ``workdir``."""
    from kbert.stages import compress as compress_stage, finetune_teacher

    teacher, init = Path(workdir) / "teacher", Path(workdir) / "init"
    finetune_teacher.run(config, SMOKE_TASK, str(teacher))
    compress_stage.run(config, SMOKE_STUDENT, str(init))
    return teacher, init


# --------------------------------------------------------------------------------------
# Tiny models and problems (losses, training, device tests)
# --------------------------------------------------------------------------------------

TINY = dict(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
ALL_LOSSES = {"embedding": 1.0, "attention": 1.0, "hidden": 1.0, "logit": 1.0, "supervised": 1.0}


def tiny_batch():
    """Three padded sequences of token ids with labels, for the tiny models of ``tiny_pair``."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.tensor([0, 2, 1])}


def tiny_pair():
    """A tiny dense teacher (3 labels, dropout off) and its Kronecker student (seeded)."""
    torch.manual_seed(0)
    teacher = KBertForSequenceClassification(KBertConfig(**TINY, num_labels=3)).eval()
    student, _ = compress(teacher, {"attention_a_shape": [4, 4], "ffn_a_shape": [4, 2], "embedding_n": 2})
    return teacher, student


# distillation_loss(tiny_pair student, teacher, tiny_batch) with ALL_LOSSES, float32 CPU
GOLDEN_LOSSES = {"embedding": 0.144725, "attention": 6.8e-05, "hidden": 0.291217, "logit": 1.098609, "supervised": 1.098562}


def toy_problem(seed=0, width=8):
    """A two-layer regression net, its epoch batches and step loss: (model, batches, step_loss)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Dropout(0.1), torch.nn.Linear(width, 1))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    y = x.sum(-1, keepdim=True)

    def batches(epoch):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(100 + epoch))
        for i in range(0, 64, 16):
            idx = order[i:i + 16]
            yield {"x": x[idx], "y": y[idx]}

    def step_loss(batch):
        loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
        return loss, {"mse": loss.item()}

    return model, batches, step_loss


TOY_SETTINGS = dict(epochs=3, lr=1e-2, steps_per_epoch=4, checkpoint_every=3)


# --------------------------------------------------------------------------------------
# Out-of-distribution sets (Table 9) in a local hub mirror
# --------------------------------------------------------------------------------------

#: Made-up rows of each OOD set in its hub layout: the columns and label names (in hub id
#: order) that the hub's dataset cards declare, written here independently of kbert.tasks.
OOD_HUB_ROWS = {
    "paws": ({"id": [1, 2, 3, 4],
              "sentence1": ["The cat sat on the mat .", "He left in 1990 for Paris .",
                            "She sings and he plays .", "Rivers flow to the sea ."],
              "sentence2": ["On the mat sat the cat .", "He left Paris in 1990 .",
                            "He sings and she plays .", "The sea flows to rivers ."],
              "label": [1, 0, 0, 0]}, ["0", "1"]),
    "imdb": ({"text": ["A wonderful film , moving and funny . " * 40, "Dull and far too long .",
                       "I loved every minute .", "The worst acting I have seen ."],
              "label": [1, 0, 1, 0]}, ["neg", "pos"]),
    "hans": ({"premise": ["The doctor saw the lawyer .", "The judge paid the actor .",
                          "The artist near the senator slept .", "The banker called the tourist ."],
              "hypothesis": ["The lawyer saw the doctor .", "The judge paid the actor .",
                             "The senator slept .", "The tourist called the banker ."],
              "label": [1, 0, 1, 1],
              "heuristic": ["lexical_overlap", "lexical_overlap", "subsequence", "lexical_overlap"]},
             ["entailment", "non-entailment"]),
}


def write_ood_mirror(root: Path, label_names: dict[str, list[str]] | None = None) -> Path:
    """A local hub mirror (``KBERT_HUB_DIR``) holding each OOD set's split as the hub lays it
    out (README configs, parquet with a ClassLabel); ``label_names`` replaces a set's."""
    from datasets import ClassLabel, Dataset, Features, Value

    from kbert.tasks import OOD_SPLITS

    for name, (_, ood) in OOD_SPLITS.items():
        rows, names = OOD_HUB_ROWS[name]
        names = (label_names or {}).get(name, names)
        features = Features({c: ClassLabel(names=names) if c == "label" else Value("int32" if c == "id" else "string")
                             for c in rows})
        repo = root / ood.hub_path
        (repo / ood.hub_name).mkdir(parents=True, exist_ok=True)
        (repo / "README.md").write_text(
            f"---\nconfigs:\n- config_name: {ood.hub_name}\n  data_files:\n  - split: {ood.hub_split}\n"
            f"    path: {ood.hub_name}/{ood.hub_split}-*\n---\n")
        Dataset.from_dict(rows, features=features).to_parquet(
            str(repo / ood.hub_name / f"{ood.hub_split}-00000-of-00001.parquet"))
    return root
