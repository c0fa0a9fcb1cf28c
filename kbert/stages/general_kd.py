"""The general-kd stage: general (pre-training) distillation of the SVD-initialised student.

Teacher: the *pre-trained* encoder (not fine-tuned). Loss: embedding-output MSE +
per-layer pre-softmax attention-score MSE + per-layer hidden-state MSE, layer l to layer l
(paper Eq. 14 without the task terms); dense TinyBERT-style students use TinyBERT's layer
mapping and projection (kbert/losses.py).

With ``losses.mlm`` or ``losses.nsp`` on (the paper's MLM + NSP terms), the corpus becomes
BERT pre-training inputs (sentence pairs, half with a random next sentence, kbert/data/pretraining.py;
15% of tokens masked, drawn anew every epoch, ``batching.mask_tokens``), teacher and student
both read them, and the student carries MLM/NSP heads copied from the teacher's
(kbert/pretraining.py). A teacher without such heads (the offline MiniLM, the random
teacher) is an error before any step. With both weights 0 the corpus is packed windows
(kbert/data/packing.py: tokenised once onto disk, cached, read a batch at a time).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from datasets import concatenate_datasets

from kbert.artifacts import provenance, resume_dir, stage_identity, stage_metrics, write_stage
from kbert.config import settings_record, stage_settings
from kbert.data import batching
from kbert.data.corpora import corpus_documents, documents_sha256
from kbert.data.packing import packed_windows
from kbert.data.pretraining import sentence_pairs
from kbert.device import check_batch_size, runtime
from kbert.losses import PRETRAINING_TERMS, distillation_loss
from kbert.modeling import KBertModel
from kbert.pretraining import with_pretraining_heads
from kbert.teachers import load_pretrained, pretraining_heads, teacher_hash, tokenizer_for
from kbert.training import TrainSettings, seed_everything, train

# The config this stage reads (kbert.config.stage_settings); its rule's rerun fingerprint hashes the same.
# The student and its calibration text are what the init it continues was built from.
CONFIG_SECTIONS = ("student", "calibration", "general_kd", "corpus_source")
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what the teacher reads of a batch


def run(config: dict, student: str, init_dir: str, out_dir: str, epochs: int | None = None) -> dict:
    """General KD of ``student`` from ``init_dir`` (its compress output) into ``out_dir``.

    ``epochs`` (the ladder's dose-response): that many whole epochs instead of the
    config's ``epochs``/``max_steps``, from ``init_dir`` that may also be an earlier
    general-KD output, so 1 -> 3 -> 10 epochs is a chain of 1 + 2 + 7 (each with its own
    warm-up and decay). ``general_kd_epochs`` in metrics.json counts them all.
    """
    if epochs is not None and epochs < 1:
        raise ValueError(f"general KD --epochs {epochs}: train at least 1 epoch")
    started = time.time()
    init_id = stage_identity(init_dir, student=student)
    prior = stage_metrics(init_dir)
    if prior.get("stage") not in ("compress", "general_kd") or (epochs is None and prior["stage"] != "compress"):
        raise ValueError(f"{init_dir} is a {prior.get('stage')!r} output; general KD starts from the compress stage"
                         + (" (or, with --epochs, an earlier general-KD output)" if epochs is None else ""))
    picked = stage_settings(config, CONFIG_SECTIONS, student=student)
    s = picked["general_kd"]
    if epochs is not None:
        s = {**s, "epochs": epochs, "max_steps": None}
    seed_everything(s["seed"])
    rt = runtime(config)
    check_batch_size(s["batch_size"], rt, "general_kd")
    tokenizer = tokenizer_for(config["teacher"])
    teacher = load_pretrained(config["teacher"]).eval().to(rt.device)
    heads_for = [term for term in PRETRAINING_TERMS if s["losses"][term]]  # [] = intermediate terms only
    teacher_heads = pretraining_heads(config["teacher"], heads_for) if heads_for else None  # error if missing
    encoder = KBertModel.from_pretrained(Path(init_dir) / "model")
    model = (with_pretraining_heads(encoder, teacher_heads, heads_for, student) if heads_for else encoder).to(rt.device)

    documents = concatenate_datasets([corpus_documents(name, source=picked["corpus_source"], fraction=s["corpus_fraction"])
                                      for name in s["corpus"]])
    data_sha256 = documents_sha256(documents)
    if heads_for:  # a pair's random next sentence may come from any document: all of them in memory
        sequences = sentence_pairs(list(documents["text"]), tokenizer, s["max_seq_length"], s["seed"])
    else:  # packed on disk, read a batch at a time
        sequences = packed_windows(documents, tokenizer, s["max_seq_length"], num_proc=torch.get_num_threads(),
                                   documents_hash=data_sha256)

    def batches(epoch):
        padded = batching.batches(sequences, s["batch_size"], shuffle=True, seed=s["seed"], epoch=epoch,
                                  pad_token_id=tokenizer.pad_token_id)
        if not heads_for:
            return padded
        masks = np.random.default_rng([s["seed"], epoch, 1])  # per epoch: a resumed run redraws the same masks
        return (batching.mask_tokens(batch, masks, mask_token_id=tokenizer.mask_token_id,
                                     vocab_size=encoder.config.vocab_size, special_ids=tokenizer.all_special_ids)
                for batch in padded)

    def step_loss(batch):
        with torch.inference_mode():  # the teacher is a fixed target: no autograd bookkeeping at all
            t_out = teacher(**{k: batch[k] for k in ENCODER_INPUTS})
        return distillation_loss(model(**batch), t_out, batch["attention_mask"], s["losses"],
                                 projection=getattr(encoder, "fit_dense", None),
                                 normalisation=s["loss_normalisation"])

    plan = TrainSettings(epochs=s["epochs"], lr=s["lr"], steps_per_epoch=batching.num_batches(len(sequences), s["batch_size"]),
                         warmup_ratio=s["warmup_ratio"], weight_decay=s["weight_decay"], max_steps=s["max_steps"])
    teacher_sha256 = teacher_hash(config["teacher"])
    inputs = {"teacher": teacher_sha256, "settings": s, "init": init_id,
              "data_sha256": data_sha256}
    log = train(model, batches, step_loss, plan, resume_dir(out_dir), desc=f"general KD {student}",
                inputs=inputs, runtime=rt)

    metrics = {
        "student": student, "stage": "general_kd", "sequences": len(sequences), "steps": len(log),
        "general_kd_epochs": round(prior.get("general_kd_epochs", 0) + len(log) / plan.steps_per_epoch, 3),
        "first_loss": log[0]["loss"], "last_loss": log[-1]["loss"],
        "provenance": provenance(config, started, teacher_sha256, data_sha256, s["seed"],
                                 settings=settings_record(config, CONFIG_SECTIONS, student=student)),
    }
    if rt.is_main:  # one writer when data-parallel
        write_stage(out_dir, metrics, encoder, tokenizer, log)  # the pre-training heads are not kept
    return metrics
