"""The Hugging Face Hub, or a local mirror laid out like it (``KBERT_HUB_DIR``), refused
early while the offline variables are set."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
from datasets import Dataset

from kbert.data.files import DataError

class HubOfflineError(ConnectionError):
    """A hub dataset was requested while the offline variables are set."""



def _offline_mode() -> bool:
    flags = (os.environ.get("HF_DATASETS_OFFLINE", ""), os.environ.get("HF_HUB_OFFLINE", ""))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags) or bool(
        datasets.config.HF_HUB_OFFLINE)



def _hub_location(hub_path: str, hub_dir=None) -> str:
    """Where ``load_dataset`` should look: a local mirror, else the hub id itself."""
    mirror = hub_dir or os.environ.get("KBERT_HUB_DIR")
    if mirror:
        local = Path(mirror) / hub_path
        if not local.is_dir():
            raise DataError(f"hub mirror {mirror} has no {hub_path}/ (expected {local})")
        return str(local)
    if _offline_mode():
        # Fail here, before datasets spends time on retries or cache look-ups.
        raise HubOfflineError(
            f"source='hub' needs {hub_path} from the Hugging Face Hub, but HF_DATASETS_OFFLINE/"
            "HF_HUB_OFFLINE is set. Use source='bundled', point KBERT_HUB_DIR at a local "
            "mirror laid out like the hub, or unset the offline variables on a networked machine.")
    return hub_path



def load_hub(path: str, name: str, split: str, hub_dir=None) -> Dataset:
    location = _hub_location(path, hub_dir)
    try:
        return datasets.load_dataset(location, name, split=split)
    except (ConnectionError, OSError, ValueError) as err:
        raise DataError(f"could not load {path} (config {name!r}, split {split!r}) "
                        f"from {location}: {err}") from err
