"""The factorised layers and their maths: no model, no kernels' internals.

    kronecker.py  KroneckerLinear, KroneckerEmbedding, nearest Kronecker products (plain, data-aware)
    lowrank.py    LowRankLinear, LowRankEmbedding, truncated SVD: the equal-size baseline
    flops.py      FLOP counts and the Eq. 7 association order (a leaf: imports nothing of kbert)
"""
