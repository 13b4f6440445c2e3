#!/usr/bin/env bash
# The open issues' GPU rows, in parts that each fit one `device` call (at most 600 s): every
# step runs under its own time limit, so a slow or failing step costs only its own rows, and
# every ratio's anchor runs in the same part as the number it divides.
#
#   source .gpu/env.sh && bench/issue_round.sh PART [PART…]
#
# Each part leaves two files in $OUT (the device tool returns at most 8, two folders deep): PART.txt,
# the summary (each step's exit, time and last lines), and PART_logs.tar.xz, every step's full log.
#
# Parts (a part's worst case is the sum of its limits, in brackets; unpacking .gpu takes some
# seconds of the call's 600 besides):
#   train   issue 18: the suite; a training step of the Mamba-2 130M shape at b = 8, l = 2048
#           and the Mamba-1 scan backward at b = 8, l = 4096 against mamba_ssm and HF's torch
#           path (bench/train_round.sh; HF's step needs more than an H100's 80 GB at b = 8:
#           out of memory, it runs at half the batch, and so on, its row naming the batch) [565 s]
#   decode  issues 18, 22: the induction demo to 1M tokens; decode of the 130M shapes at batch 1,
#           8 and 64 in f32 against mamba_ssm's generate with CUDA graphs [525 s; 575 with a
#           baseline]
#   tune    issue 22: decode in f16 (mamba_ssm's bf16 rows are in `decode`) and with every
#           program autotuned; the scan's autotuner against the hand-picked strategies [480 s]
#   big     issue 22: the 1.4B shapes (Mamba-2 and Mamba, f32 and f16) against mamba_ssm [480 s]
#   ssd     issues 22, 19, 18: SSD at l = 8192 with f16 inputs against Triton bf16; cumsum and
#           cummax against the copy and torch; the Gated DeltaNet's forward and backward against
#           FLA's (bench/delta_grad_bench.ts) [520 s]
#   delta   issue 19: Gated DeltaNet against FLA (f32, bf16; default, forced and autotuned) [420 s;
#           520 with a baseline]
#   layers  issue 20: GLA and simple GLA against FLA; attention against torch [560 s]
#
# ISSUE_ROUND_SKIP=demo,cum_torch skips steps by name (a step's name is its log's).
# ISSUE_ROUND_BASELINE also runs the decode and delta parts' ssmkit rows on another tree in the
# same call (an A/B of untimed changes against their parent): a commit, checked out as a git
# worktree where the checkout has its .git, or a tarball of the tree. The device's copy of the
# checkout may lack .git: then pack the tree here and carry it, e.g.
#   echo /.baseline.tar.xz >> .git/info/exclude; git archive COMMIT | xz > .baseline.tar.xz
# and run with ISSUE_ROUND_BASELINE=.baseline.tar.xz (carry: [".gpu", ".peer", ".baseline.tar.xz"]).
#
# Peers run from fetched sources in .peer (mamba_ssm, fla; see ../shared/REFERENCE.md). The
# last lines of each step's log are printed after it; the full logs stay in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
root="${OUT:-/tmp/issue_round}"
mkdir -p "$root"
[ -d .gpu/deno_dir ] || { [ -f .gpu/deno_dir.tar.xz ] && tar -xJf .gpu/deno_dir.tar.xz -C .gpu; }
peer="PYTHONPATH=.peer:bench"
ck="${ISSUE_ROUND_CHECKPOINTS:-/tmp/issue_round_checkpoints}"

# step NAME SECONDS COMMAND: runs COMMAND (a shell line) under a time limit into NAME.log.
step() {
  local name="$1" limit="$2" cmd="$3" t0=$SECONDS
  if [[ ",${ISSUE_ROUND_SKIP:-}," == *",$name,"* ]]; then echo "--- $name: skipped"; return; fi
  timeout "$limit" bash -c "$cmd" > "$logs/$name.log" 2>&1
  local rc=$?
  echo "--- $name: exit $rc after $((SECONDS - t0)) s (limit $limit)"
  grep -v '^ssmkit generate trace' "$logs/$name.log" | tail -n "${ISSUE_ROUND_TAIL:-8}"
}

# The ISSUE_ROUND_BASELINE tree, sharing .gpu and .peer; prints its path (empty if unset or if
# it cannot be made, with the reason on stderr).
baseline_tree() {
  local base="${ISSUE_ROUND_BASELINE:-}" dir=/tmp/issue_round_baseline
  [ -n "$base" ] || return 0
  if [ ! -d "$dir" ]; then
    if [ -f "$base" ]; then
      mkdir -p "$dir" && tar -xJf "$base" -C "$dir" ||
        { echo "issue_round: cannot unpack $base" >&2; rm -rf "$dir"; return 0; }
    elif ! git worktree add -f --detach "$dir" "$base" > /dev/null 2>&1; then
      echo "issue_round: no tree at $base (no .git here? carry a tarball)" >&2
      return 0
    fi
    ln -s "$PWD/.gpu" "$dir/.gpu"
    ln -s "$PWD/.peer" "$dir/.peer"
  fi
  echo "$dir"
}

# The 130M (or 1.4B) checkpoints of HF's configs with random weights, once per machine.
checkpoints() {
  local size="$1" dir="$ck/$1" missing=()
  for k in mamba mamba2; do [ -f "$dir/$k/config.json" ] || missing+=("$k"); done
  [ ${#missing[@]} -eq 0 ] || step "checkpoints_$size" 100 \
    "PYTHONPATH=bench python3 bench/lm_hf.py $dir $(IFS=,; echo "${missing[*]}") $size"
}

run_part() {
  logs="/tmp/issue_round_logs/$1"
  rm -rf "$logs" && mkdir -p "$logs"
  local gpu
  gpu=$(nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader 2>&1 | head -1)
  echo "=== part $1 on $gpu at $(date -u +%FT%TZ), tree $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  case "$1" in
    train)
      step suite 120 "deno task test"
      step train 445 "OUT=$logs/train TRAIN_CASES=mamba2_130m_step@8x2048,scan_bwd@8x4096 \
        TRAIN_STEPS=3 TRAIN_PEER_EACH=180 TRAIN_PEER_TIMEOUT=300 TRAIN_SSMKIT_TIMEOUT=130 \
        bench/train_round.sh"
      ;;
    decode)
      step demo 180 "deno task demo --max-len 1048576"
      checkpoints 130m
      step lm_f32 75 "deno run -A bench/lm_bench.ts $ck/130m mamba2,mamba --batches=8,64"
      base=$(baseline_tree)
      [ -z "$base" ] || step lm_f32_baseline 50 "cd $base && deno run -A bench/lm_bench.ts $ck/130m mamba2,mamba --batches="
      step mamba_ssm 170 "$peer python3 bench/decode_peer.py --sizes 130m --batches 1,8,64"
      ;;
    tune)
      checkpoints 130m
      step lm_f16 70 "deno run -A bench/lm_bench.ts $ck/130m mamba2,mamba --batches=8,64 --dtype f16"
      step lm_autotuned 230 "deno run -A bench/lm_bench.ts $ck/130m mamba2,mamba --batches=64 --autotune"
      step scan_tune 80 "deno run -A bench/scan_tune.ts --only 'default;lane kernel;tiled 16 steps, 32 channels x 4 lanes;autotuned' --rounds 2"
      ;;
    ssd)
      step ssd_f16 180 "deno run -A bench/ssd_bench.ts --lengths 8192 --dtype f16"
      step ssd_triton 70 "$peer python3 bench/ssd_torch.py --lengths 8192"
      step cum 60 "deno run -A bench/cum_bench.ts"
      step cum_torch 60 "python3 bench/cum_torch.py"
      step delta_grad 150 "$peer deno run -A bench/delta_grad_bench.ts --peer"
      ;;
    big)
      checkpoints 1.4b
      step lm_14b_f32 120 "deno run -A bench/lm_bench.ts $ck/1.4b mamba2,mamba --size 1.4b --batches="
      step lm_14b_f16 90 "deno run -A bench/lm_bench.ts $ck/1.4b mamba2,mamba --size 1.4b --batches= --dtype f16"
      step mamba_ssm_14b 170 "$peer python3 bench/decode_peer.py --sizes 1.4b --batches 1 --dtypes f32"
      ;;
    delta)
      step delta 420 "$peer deno run -A bench/delta_bench.ts --peer --autotune"
      base=$(baseline_tree)
      [ -z "$base" ] || step delta_baseline 100 "cd $base && deno run -A bench/delta_bench.ts --shapes 1x8192x32x128"
      ;;
    layers)
      step gla 400 "$peer deno run -A bench/gla_bench.ts --peer"
      step attention 90 "deno run -A bench/attention_bench.ts"
      step attention_torch 70 "python3 bench/attention_torch.py"
      ;;
    *)
      echo "issue_round: unknown part \"$1\" (train, decode, tune, big, ssd, delta, layers)" >&2
      return 2
      ;;
  esac
}

[ $# -gt 0 ] || { sed -n '2,34p' "$0"; exit 2; }
for part in "$@"; do
  run_part "$part" 2>&1 | tee "$root/$part.txt"
  rc=${PIPESTATUS[0]}
  [ -d "/tmp/issue_round_logs/$part" ] &&
    tar -cJf "$root/${part}_logs.tar.xz" -C /tmp/issue_round_logs "$part"
  [ "$rc" -eq 0 ] || exit "$rc"
done
