"""Train a govtopic model from a YAML config: python scripts/train.py CONFIG [dotted.key=value ...]."""

import sys

from govtopic.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
