#!/usr/bin/env bash
# Creates .venv-labelstudio: the Label Studio server and label-studio-sdk, for the live test
# (tests/test_label_studio_live.py). Its own environment, because label-studio pins numpy and pyarrow
# below what govtopic's .venv uses. About 1 GB; a minute or two to install, a second when already there.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-labelstudio
# label-studio pins its SDK exactly (1.23.2 wants label-studio-sdk==2.1.2): change the two together.
LABEL_STUDIO=1.23.2
SDK=2.1.2
# label-studio 1.23.2 starts sentry with an option sentry-sdk 3.0 no longer takes ("Unknown option
# 'send_default_pii'": the server exits at once), and its own requirement leaves sentry-sdk unbounded.
SENTRY="sentry-sdk<3"
installed() {
  "$VENV/bin/python" - "$LABEL_STUDIO" "$SDK" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
sys.exit(not (
    version("label-studio") == sys.argv[1]
    and version("label-studio-sdk") == sys.argv[2]
    and int(version("sentry-sdk").split(".")[0]) < 3
))
EOF
}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# Nothing in it belongs in git (python3.13's venv writes this file itself; older ones do not).
[ -f "$VENV/.gitignore" ] || echo "*" > "$VENV/.gitignore"
if ! installed; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install -q "label-studio==$LABEL_STUDIO" "label-studio-sdk==$SDK" "$SENTRY"
fi
echo "Label Studio ready: $VENV (label-studio $LABEL_STUDIO, label-studio-sdk $SDK)"
