"""kbert: KroneckerBERT reproducibility suite."""

from pathlib import Path

__version__ = "0.1.0"

#: The checkout: ``data/``, ``workflow/``, ``results/`` are below it.
REPO_ROOT = Path(__file__).resolve().parent.parent
