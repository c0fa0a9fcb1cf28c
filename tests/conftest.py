"""Test setup shared by every module under tests/ (which mirrors kbert/: tests/layers, tests/kernels, ...).

Helpers that several test modules use (the repository paths and ``run_workflow``, the tiny
models and problems with their pinned losses) live in tests/helpers.py; import them by
name, ``from helpers import REPO``, never from another test module.
"""

import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # pytest's default "prepend" mode already did this; other import modes do not
    sys.path.insert(0, _TESTS)


@pytest.fixture(scope="session", autouse=True)
def packed_corpus_cache(tmp_path_factory):
    """General KD's packed corpora (kbert/data/packing.py) go to a temporary directory, not
    ~/.cache/kbert/corpus, so no test reads a cache another session left behind."""
    with pytest.MonkeyPatch.context() as patch:  # os.environ: the workflow tests' subprocesses inherit it
        patch.setenv("KBERT_CORPUS_DIR", str(tmp_path_factory.mktemp("corpus-cache")))
        yield
