#!/usr/bin/env bash
# One call on a lent GPU: the harness's `full` kernel suite, then the same suite again as a
# repeatability check (skipped when the first pass took too long), the per-kernel launch costs
# (`bench overheads`: eager, CUDA-graph replay, kernel alone), with the machine's state
# (nvidia-smi before and after) next to the CSVs.
#
#   OUT=/some/folder bash reports/scripts/gpu_bench.sh [profile-id]
#
# Runs from a source checkout with no install: the repository root goes on PYTHONPATH. Wheels in
# .whl/ (e.g. simpy, which the CLI imports and a bare GPU image may lack) are unpacked first.
# SUITE and DEVICE override the suite (full) and device (cuda), e.g. for a dry run on a CPU.
# The profile id defaults to the one `bench run` maps the device name to.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/gpu-bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
hw_flag=()
[ $# -ge 1 ] && hw_flag=(--hardware "$1")

nvidia-smi >"$OUT/nvidia-smi-before.txt" 2>&1
python3 - <<'EOF' | tee "$OUT/env.txt"
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability(),
          "SMs", torch.cuda.get_device_properties(0).multi_processor_count)
EOF

start=$(date +%s)
run() {  # $1: output CSV
  python3 -m simulator.cli bench run --device "${DEVICE:-cuda}" --suite "${SUITE:-full}" ${hw_flag[@]+"${hw_flag[@]}"} --out "$1" 2>>"$OUT/bench-stderr.log"
}
run "$OUT/full.csv" || { tail -20 "$OUT/bench-stderr.log"; exit 1; }
first=$(( $(date +%s) - start ))
echo "first pass: ${first} s"
if [ "$first" -lt 150 ]; then
  run "$OUT/full-rerun.csv" && echo "second pass: $(( $(date +%s) - start - first )) s"
fi
ops=(--ops-out "$OUT/step-ops.csv")  # graph replay: CUDA only
[ "${DEVICE:-cuda}" = cpu ] && ops=()
python3 -m simulator.cli bench overheads --device "${DEVICE:-cuda}" --out "$OUT/overheads.csv" ${ops[@]+"${ops[@]}"} \
  2>>"$OUT/bench-stderr.log" || { echo "bench overheads failed"; tail -5 "$OUT/bench-stderr.log"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,power.draw,power.limit,temperature.gpu \
  --format=csv >"$OUT/nvidia-smi-after.csv" 2>&1
cat "$OUT/nvidia-smi-after.csv"
