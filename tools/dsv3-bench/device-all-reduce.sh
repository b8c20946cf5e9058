#!/usr/bin/env bash
# The custom all-reduce on the device machine (docs/parallel.md, "Custom all-reduce"): its GPU
# test, then dsv3-all-reduce-bench at every GPU count the machine has (2, 4, 8; the simulated
# ranks on one GPU), and with `step`, dsv3-bench --tp 2 with and without --custom-all-reduce.
# Binaries from .device/, made here by
#   EXTRA="tools/dsv3-all-reduce-bench" tools/dsv3-bench/pack-device.sh build-cuda
# after building gpu_custom_all_reduce_test, dsv3-all-reduce-bench, dsv3-generate and
# dsv3-bench. Usage (run tool, repository root): tools/dsv3-bench/device-all-reduce.sh [step]
set -uo pipefail
source "$(dirname "$0")/device-env.sh"
gpus=$(nvidia-smi -L | wc -l)
timeout 400 $bin/gpu_custom_all_reduce_test >"$out/gpu_custom_all_reduce_test.log" 2>&1
echo "gpu_custom_all_reduce_test rc=$?"
grep -E "^\[ +(OK|FAILED|SKIPPED) +\]|Failure|: rank [0-9]" "$out/gpu_custom_all_reduce_test.log" |
  head -60
for n in 2 4 8; do
  [ "$n" -le "$gpus" ] || continue
  timeout 120 $bin/dsv3-all-reduce-bench --gpus "$n" 2>&1 | tee "$out/all-reduce-$n.md"
done
if [ "$gpus" -lt 2 ]; then
  timeout 120 $bin/dsv3-all-reduce-bench 2>&1 | tee "$out/all-reduce-1.md"
fi
if [ "${1:-}" = step ] && [ "$gpus" -ge 2 ]; then
  for flag in "" --custom-all-reduce; do
    echo "## dsv3-bench --tp 2 $flag"
    timeout 240 $bin/dsv3-bench --tp 2 $flag 2>&1 | tee "$out/bench-tp2$flag.md" | grep -E "^\|" |
      head -20
  done
fi
