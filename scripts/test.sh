#!/usr/bin/env bash
# The test command: sets up .venv if needed, then runs the whole suite (slow tests included), offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_label_studio.sh  # the live Label Studio test runs the real server from its own environment
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
