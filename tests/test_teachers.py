"""The pre-trained teacher is one network, whichever stage builds it."""

import torch

from kbert.teachers import load_pretrained, teacher_hash

RANDOM = {"source": "random", "name": "tiny", "random": {"hidden_size": 16, "num_hidden_layers": 1,
                                                        "num_attention_heads": 2, "intermediate_size": 32}}


def test_a_random_teacher_follows_from_its_spec_alone():
    # finetune-teacher, compress and general-kd each build it after seeding with their own
    # seeds; the weights must not depend on that, since teacher_hash only sees the spec.
    torch.manual_seed(1)
    first = load_pretrained(RANDOM).state_dict()
    torch.manual_seed(2)
    second = load_pretrained(RANDOM).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert teacher_hash(RANDOM) == teacher_hash(dict(RANDOM))
    wider = {**RANDOM, "random": {**RANDOM["random"], "intermediate_size": 64}}
    assert teacher_hash(wider) != teacher_hash(RANDOM)
