"""Evaluate a model folder: python scripts/evaluate.py MODEL_DIR DATA_FILE [--output DIR]."""

import sys

from govtopic.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
