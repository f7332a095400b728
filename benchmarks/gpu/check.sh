#!/usr/bin/env bash
# Run THERE: the lent GPU machine, through the device tool, from the repository root, after
# `bash benchmarks/gpu/prepare.sh` here (see README.md beside this file):
#
#   run(carry=[".whl", ".data"], timeout_s=570, command="bash benchmarks/gpu/check.sh")
#
# Installs the carried wheels into /tmp/site (the image has torch, numpy, scipy, ...; nothing
# can be fetched there), then runs the GPU measurements of issue 17 in order of value,
# each under its own time limit so that the call ends inside the device tool's 10 minutes, and
# leaves at most 8 files in $OUT (the tool's limit): machine.txt, and per stage its JSON,
# Markdown and log. A stage that fails or times out leaves its log and does not stop the next.
#
# Stages (arguments; default all, in this order) and their limits (s, environment); DEVICE
# (default cuda) and BENCH_ARGS (default: --pairs 1 --no-reference) let the script be rehearsed
# on a CPU machine (README.md):
#   bench      the 346 Mpx pellet (20480 x 16896 px) end to end with the streaming stitcher,
#              its model-only limit, MONAI and the budget; one pair and no run of today's
#              path, so that the JSON, written at the end, is sure to come back
#              (BENCH_S, 330; BENCH_ARGS="--pairs 2" adds the reference where time allows)
#   agreement  bf16 against fp32 labels on the device on NASA EBC mosaics (AGREEMENT_S, 150)
set -uo pipefail
out=${OUT:-/tmp/pelletseg-gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PELLETSEG_HOME=/tmp/pelletseg-home
device=${DEVICE:-cuda}
precision=bf16
[ "$device" = cuda ] || precision=fp32  # autocast is a CUDA setting
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(bench agreement)

started=$(date +%s)
if ! python3 -c "import pydantic, celery, pyvips" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "wheels did not install (run benchmarks/gpu/prepare.sh here first)"; exit 2; }
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}

{
  date -u +"%Y-%m-%d %H:%M:%S UTC"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1
  echo "cpus $(nproc), memory $(free -g | awk '/Mem:/ {print $2}') GiB"
  python3 -c "import sys, torch, pyvips; print('python', sys.version.split()[0], '| torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), '| libvips', pyvips.version(0), pyvips.version(1))" 2>&1
  git log --oneline -1 2>/dev/null || true
  echo "set-up: $(( $(date +%s) - started )) s"
} > "$out/machine.txt"
cat "$out/machine.txt"

stage() {  # name, seconds, command...
  local name=$1 seconds=$2
  shift 2
  local t0
  t0=$(date +%s)
  echo "== $name (at most $seconds s)"
  timeout -k 10 "$seconds" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc $rc after $(( $(date +%s) - t0 )) s" | tee -a "$out/$name.log"
  tail -n 5 "$out/$name.log"
}

for s in "${stages[@]}"; do
  case "$s" in
    bench)
      # shellcheck disable=SC2086  # BENCH_ARGS: several options
      stage gpu-full "${BENCH_S:-330}" python3 -m cli bench --device "$device" ${BENCH_ARGS:---pairs 1 --no-reference} \
        --rss-sizes '' --json "$out/gpu-full.json" --work /tmp/pelletseg-bench ;;
    agreement)
      stage agreement-bf16 "${AGREEMENT_S:-150}" python3 -m cli agreement --device "$device" \
        --precision "$precision" --runtimes eager --geometries 1728/96 --runtime-geometries 1728/96,1024/128 \
        --speed-seconds 3 --data .data --lumenstone 0 --json "$out/agreement-bf16.json" \
        --work /tmp/pelletseg-agreement ;;
    *) echo "unknown stage $s (bench, agreement)"; exit 2 ;;
  esac
done
echo "all stages: $(( $(date +%s) - started )) s"
