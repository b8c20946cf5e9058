#!/usr/bin/env bash
# One whole check-and-bench sequence on the device machine (docs/cuda.md, "Running on the
# H200"): binaries and their shared libraries travel in .device/ (bin/, lib.tar.xz), built here
# with build-cuda; the GPU tests find their data under /work/main as on the dev machine.
# Usage (inside the `run` tool, repository root): tools/dsv3-bench/device-run.sh [tests|bench|all]
set -uo pipefail
what=${1:-all}
out=${OUT:-/tmp/out}
mkdir -p "$out" /tmp/dsv3
tar xJf .device/lib.tar.xz -C /tmp/dsv3
export LD_LIBRARY_PATH=/tmp/dsv3/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
mkdir -p /work && [ -e /work/main ] || ln -s "$PWD" /work/main
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$out/gpu.txt"
bin=.device/bin
if [ "$what" != bench ]; then
  for t in gpu_cuda_ops_test gpu_cuda_engine_test gpu_cuda_lockstep_test gpu_cuda_model_test; do
    timeout 300 $bin/$t --gtest_brief=1 >"$out/$t.log" 2>&1
    echo "$t rc=$?"
  done
  grep -h "^errors" "$out/gpu_cuda_model_test.log" >"$out/errors.txt"
  grep -h "^lockstep\|^fixture FP8" "$out"/gpu_cuda_*_test.log
  for d in cpu cuda; do
    $bin/dsv3-generate --model tests/data/fixtures/ragged-fp8 --device $d --threads 8 \
      --prompt-ids 5,77,300,12 --max-new-tokens 12 2>&1 | tail -2 | sed "s/^/generate $d: /"
  done
  $bin/dsv3-generate --model tests/data/fixtures/ragged-fp8 --device cuda --tp 2 \
    --prompt-ids 5 2>&1 | tail -1 | sed "s/^/generate cuda tp2: /"
fi
if [ "$what" != tests ]; then
  timeout 240 $bin/dsv3-bench 2>&1 | tee "$out/bench.md" | grep -E "^\|" | head -40
fi
grep -hE "FAILED|PASSED" "$out"/gpu_*.log 2>/dev/null | sort | uniq -c | head -40
