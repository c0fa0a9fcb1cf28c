"""One readable file per training stage. Each ``run(...)`` trains, evaluates and writes
``<out>/model/`` (HF-style checkpoint) and ``<out>/metrics.json`` atomically."""
