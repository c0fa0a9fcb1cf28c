"""kbert: KroneckerBERT reproducibility suite."""

__version__ = "0.1.0"
