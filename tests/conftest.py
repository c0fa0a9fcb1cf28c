"""Test setup shared by every module under tests/ (which mirrors kbert/: tests/layers, tests/kernels, ...).

Helpers that several test modules use (the repository paths and ``run_workflow``, the tiny
models and problems with their pinned losses) live in tests/helpers.py; import them by
name, ``from helpers import REPO``, never from another test module.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # pytest's default "prepend" mode already did this; other import modes do not
    sys.path.insert(0, _TESTS)
