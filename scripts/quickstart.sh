#!/usr/bin/env bash
# The main job on a fresh machine: set up, train the quickstart model on the bundled data (the test split of
# each source is evaluated automatically), evaluate it on the official test split by publisher and on the
# official Hebei documents, and tag the five seed documents. A rerun starts the quickstart run over.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
RUN=runs/quickstart
start=$(date +%s)
.venv/bin/govtopic train configs/quickstart.yaml --overwrite "$@"
.venv/bin/govtopic evaluate "$RUN/model" data/official.jsonl.gz --group-by label_source --output "$RUN/eval-official"
.venv/bin/govtopic evaluate "$RUN/model" data/gold_dev.jsonl --output "$RUN/eval-gold"
rm -f "$RUN/seeds.jsonl" "$RUN/seeds.errors.jsonl"  # this run's own earlier output (also from older versions)
.venv/bin/govtopic predict "$RUN/model" data/seeds --output "$RUN/seeds.jsonl" --top-k 3 --evidence
echo
echo "== the five seed documents (the first level is the one whose labels sum highest, then its best label)"
.venv/bin/python - "$RUN/seeds.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(line)
    alts = ", ".join(f"{a['label']} {a['score']:.2f}" for a in r.get("top_k", [])[1:])
    print(f"{r['source'].rsplit('/', 1)[-1]}: {r['label']} ({r['score']:.2f}; first level {r['score_l1']:.2f}); next: {alts}")
PY
echo
echo "done in $(( $(date +%s) - start )) s. Reports: $RUN/eval/report.html (test split, per source)," \
  "$RUN/eval-official/report.html (official test by publisher), $RUN/eval-gold/report.html (gold_dev)"
