#!/usr/bin/env bash
# One GPU call for the training benchmark: the torch peers (bench/train_peer.py), then ssmkit
# (deno task bench --only train), then one table with each case's ratio to its anchor measured
# in this call (mamba_ssm f32 for the model steps, HF's torch scan for the scan backward).
#
#   source .gpu/env.sh && bench/train_round.sh                    # every case (logs in $OUT)
#   TRAIN_CASES=mamba2_130m_step@1x256,scan_bwd@1x512 bench/train_round.sh   # some cases
#   TRAIN_SCALE=tiny bench/train_round.sh                         # toy shapes: a dry run
#   TRAIN_PEERS=mamba_ssm_f32,mamba_ssm_bf16_autocast bench/train_round.sh   # some peers
#   TRAIN_PEER_TIMEOUT=300 TRAIN_SSMKIT_TIMEOUT=300 bench/train_round.sh   # time limits (s)
#   TRAIN_PEER_EACH=90 bench/train_round.sh     # one peer on one case at most 90 s, then the next
#   TRAIN_KERNEL_DUMP=$OUT/kernels bench/train_round.sh   # each model step's kernels (times, WGSL)
#
# A case that fails on one side (out of memory, over the device's binding limits) shows its
# one-line reason in the table; the other cases still run. PYTHONPATH gets .peer (mamba_ssm).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/train_round}"
mkdir -p "$out"
export PYTHONPATH=".peer${PYTHONPATH:+:$PYTHONPATH}"
scale="${TRAIN_SCALE:-full}"
steps="${TRAIN_STEPS:-5}"
cases="${TRAIN_CASES:-}"
peer_list="${TRAIN_PEERS:-}"
peer_timeout="${TRAIN_PEER_TIMEOUT:-0}"
peer_each="${TRAIN_PEER_EACH:-0}"
ssmkit_timeout="${TRAIN_SSMKIT_TIMEOUT:-0}"
kernel_dump="${TRAIN_KERNEL_DUMP:-}"

timeout "$peer_timeout" python3 bench/train_peer.py --scale "$scale" --steps "$steps" \
  --peer-timeout "$peer_each" \
  ${cases:+--cases "$cases"} ${peer_list:+--peers "$peer_list"} \
  > "$out/peer.log" 2> "$out/peer.err"
echo "train_peer.py exit $? (stderr: $out/peer.err)"
timeout "$ssmkit_timeout" deno run -A bench/main.ts --only train --train-scale "$scale" --train-steps "$steps" \
  ${cases:+--train-cases "$cases"} ${kernel_dump:+--train-kernel-dump "$kernel_dump"} \
  > "$out/ssmkit.log" 2> "$out/ssmkit.err"
echo "ssmkit train bench exit $? (stderr: $out/ssmkit.err)"

python3 - "$out/ssmkit.log" "$out/peer.log" <<'PY'
import json, sys

def rows(path):
    out = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out

ours = [r for r in rows(sys.argv[1]) if r.get("bench", "").startswith("train_")]
ours = list({r["case"]: r for r in ours}.values())  # the summary repeats each row
peers = [r for r in rows(sys.argv[2]) if "case" in r]
device = [r for r in rows(sys.argv[2]) if r.get("anchor") == "device"]
if device:
    print(f'GPU: {device[0]["name"]}, torch {device[0]["torch"]}')
order = [r["case"] for r in ours] + [r["case"] for r in peers]
case_ids = list(dict.fromkeys(order))
print(f'{"case":26} {"implementation":26} {"ms/step":>10} {"tokens/s":>10} {"memory MiB":>16} '
      f'{"x anchor":>9}  note')
for case in case_ids:
    anchor_name = "hf_torch_f32" if case.startswith("scan") else "mamba_ssm_f32"
    base = case.replace("_walk", "").replace("_autotuned", "").replace("_lanes1", "")  # ssmkit options: the base anchor
    anchor = next((p for p in peers if p["case"] == base and p["anchor"] == anchor_name), None)
    entries = [("ssmkit_f32", r, "buffers") for r in ours if r["case"] == case]
    entries += [(p["anchor"], p, "torch peak") for p in peers if p["case"] == case]
    for name, r, mem_kind in entries:
        if "error" in r:
            print(f'{case:26} {name:26} {"-":>10} {"-":>10} {"-":>16} {"-":>9}  FAILED: {r["error"]}')
            continue
        mem = r.get("bufferMiB", r.get("peakMiB"))
        ratio = (f'{r["ms"] / anchor["ms"]:.2f}' if anchor and "ms" in anchor else "-")
        note = f'({mem_kind})' + (f' {r["note"]}' if "note" in r else "")
        if name.startswith("ssmkit"):
            pipelines = r.get("compileTimes", {}).get("pipelines", "?")
            note += (f' {r["kernels"]} kernels ({pipelines} pipelines), compile '
                     f'{r["compileS"]:.0f} s, {r["timing"]}')
        print(f'{case:26} {name:26} {r["ms"]:10.2f} {r["tokPerS"]:10.0f} {mem:16.1f} {ratio:>9}  {note}')
print(f"x anchor: ms/step over the anchor's in this call (mamba_ssm_f32 for model steps, "
      f"hf_torch_f32 for the scan); memory: ssmkit sums its buffers (WebGPU has no memory "
      f"query), torch reports max_memory_allocated")
PY
