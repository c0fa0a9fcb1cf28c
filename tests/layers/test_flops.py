"""FLOP counts (paper Eq. 7) and the association order chosen from them."""

import pytest

from kbert.layers.flops import association_order, kron_flops, kron_flops_per_order
from kbert.layers.kronecker import KroneckerLinear


def test_flops_match_eq7_and_pick_cheaper_order():
    costs = kron_flops_per_order((384, 384), (2, 2))
    assert costs == {"b_first": 3 * 2 * 384 + 767 * 2 * 384, "a_first": 767 * 2 * 384 + 3 * 2 * 384}
    layer = KroneckerLinear(768, 3072, (8, 2))
    assert layer.flops(128) == 128 * kron_flops((8, 2), (384, 384))
    assert layer.num_parameters() == 8 * 2 + 384 * 384 + 3072
    assert kron_flops((8, 2), (384, 384), rank=3) == 3 * min(kron_flops_per_order((8, 2), (384, 384)).values())


def test_association_order_is_the_cheaper_one_or_checked():
    assert association_order((8, 2), (384, 384)) == "b_first"   # W1 of KroneckerBERT_8
    assert association_order((2, 8), (384, 384)) == "a_first"   # W2
    assert association_order((3, 3), (3, 3)) == "b_first"       # a tie goes to b_first
    assert association_order((8, 2), (384, 384), "a_first") == "a_first"
    with pytest.raises(ValueError, match="unknown contraction order 'c_first'"):
        association_order((8, 2), (384, 384), "c_first")
