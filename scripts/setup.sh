#!/usr/bin/env bash
# Creates .venv with everything govtopic needs (CPU torch first: a bare "torch" would pull a CUDA build),
# and a CJK font so report plots show Chinese class names. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev,onnx,serve,ray]"
if ! fc-list 2>/dev/null | grep -qiE "WenQuanYi|Noto Sans CJK|Noto Sans SC|Source Han"; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null) \
      || echo "note: could not install fonts-wqy-microhei; plots will show Chinese as boxes"
  else
    echo "note: install a CJK font (e.g. apt-get install fonts-wqy-microhei) for Chinese labels in plots"
  fi
fi
echo "environment ready: .venv ($(.venv/bin/python -c 'import govtopic; print("govtopic", govtopic.__version__)'))"
