"""``python -m kbert.bench layers|models|equal-size|augment|training [args]``: dispatch to one benchmark."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {  # command -> (module, entry point)
    "layers": ("kbert.bench.layers", "main"),
    "models": ("kbert.bench.models", "main"),
    "equal-size": ("kbert.bench.models", "main_equal_size"),
    "augment": ("kbert.bench.augment", "main"),
    "training": ("kbert.bench.training", "main"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(f"usage: python -m kbert.bench {{{'|'.join(COMMANDS)}}} [args]   (each takes --help)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module, entry = COMMANDS[argv[0]]
    getattr(importlib.import_module(module), entry)(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
