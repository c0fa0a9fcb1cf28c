"""``python -m kbert.bench layers|models|augment|training [args]``: dispatch to one benchmark."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "layers": "kbert.bench.layers",
    "models": "kbert.bench.models",
    "augment": "kbert.bench.augment",
    "training": "kbert.bench.training",
    "training": "kbert.bench.training",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(f"usage: python -m kbert.bench {{{'|'.join(COMMANDS)}}} [args]   (each takes --help)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    module.main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
