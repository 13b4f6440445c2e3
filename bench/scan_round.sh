#!/usr/bin/env bash
# One GPU call for the selective-scan benchmark (issue 3): sweep scan strategies, then time the
# official numbers (copy, scan, step) with the fastest strategy and the torch anchors (copy, HF's
# torch selective scan) in the same call, then the batch sweep of the default and the fastest.
#
#   source .gpu/env.sh && bench/scan_round.sh            # logs in $OUT (or /tmp/scan_round)
#   SCAN_ONLY="staged;default" bench/scan_round.sh       # other variants (scan_tune --only)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/scan_round}"
mkdir -p "$out"
only="${SCAN_ONLY:-tiled;default}"

# SCAN_TUNE_ARGS: extra scan_tune options (e.g. a small --b --l --d for a dry run).
deno run -A bench/scan_tune.ts --only "$only" ${SCAN_TUNE_ARGS:-} > "$out/tune.log" 2>&1
fastest=$(grep '"scan_fastest"' "$out/tune.log")
strategy=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["strategy"]))' \
  "$fastest")
name=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["name"])' "$fastest")
echo "fastest variant: $name $strategy"

deno task bench --only copy,scan,step --scan "$strategy" > "$out/bench.log" 2>&1
python3 bench/torch_anchors.py --only copy,scan > "$out/torch.log" 2>&1
deno run -A bench/scan_tune.ts --only "default;$name" --rounds 1 --batches 2,4,6,8 \
  ${SCAN_TUNE_ARGS:-} > "$out/batches.log" 2>&1

echo "--- sweep (fraction of the copy kernel):"
python3 - "$out/tune.log" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for r in sorted((r for r in rows if r.get("bench") == "scan_variant" and "ms" in r),
                key=lambda r: r["ms"]):
    print(f'{r["ms"]:8.3f} ms {100 * r["fractionOfCopy"]:5.1f}%  {r["name"]}')
PY
echo "--- official (bench.log, torch.log):"
grep -h '"copy_256MiB\|selective_scan\|"anchor"' "$out/bench.log" "$out/torch.log" || true
echo "--- batches:"
grep -h '"scan_batch"' "$out/batches.log" || true
