"""Fast CPU contractions behind the Kronecker layers and attention, and their autograd.

    linear.py     kron_linear, kron_heads (+ heads_fusable, decided once): what the layers call (autocast handled here)
    plans.py      the layout plans (choose_plan) and the autograd Functions that run them
    passes.py     the memory-bound passes, C kernel or torch ops
    attention.py  attention's Q K^T + mask and P V as single C passes (inference only)
    native.py     builds and loads csrc/*.c (optional: torch ops without a C compiler)
"""
