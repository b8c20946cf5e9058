#!/usr/bin/env bash
# One whole check-and-bench sequence on the device machine (docs/cuda.md, "Running on the
# H200"): binaries and their shared libraries travel in .device/ (bin.tar.xz, lib.tar.xz), built here
# with build-cuda. The fixtures travel as their archives in the working tree and are extracted
# to /tmp/dsv3/fixtures, where DSV3_FIXTURES_DIR points the tests (tests/test_util.h FixturePath).
# Usage (inside the `run` tool, repository root):
#   tools/dsv3-bench/device-run.sh [tests|bench|all|issue18]
# issue18: only issue 18's rows (context 1024 at batches 1, 32 and 128 with the 4096-token
# prefill; contexts 65536 and 16384 at 1, 8 and 32), after the GPU tests named in TESTS (e.g.
# TESTS="gpu_cuda_ops_test gpu_cuda_graphs_test": kernels changed since the last device run),
# the tables in one archive ($OUT/issue18.tar.gz: the run tool brings back at most eight files),
# packed again as each table ends, so that a call cut short still returns what finished.
# On a machine with two GPUs (nvidia-h200-x2) it also runs the tensor-parallel test and the
# bench at --tp 2. pack-device.sh makes .device/.
set -uo pipefail
what=${1:-all}
source "$(dirname "$0")/device-env.sh"
fixtures=$DSV3_FIXTURES_DIR
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$out/gpu.txt"
gpus=$(nvidia-smi -L | wc -l)
# Runs the named GPU tests, each one's log in $out/<test>.log, a line per test.
run_tests() {
  for t in "$@"; do
    timeout 300 $bin/$t --gtest_brief=1 >"$out/$t.log" 2>&1
    echo "$t rc=$? $(grep -hE '^\[  (PASSED|FAILED) ' "$out/$t.log" | tr '\n' ' ')"
  done
}
if [ "$what" = issue18 ]; then
  run_tests ${TESTS:-}
  [ -z "${TESTS:-}" ] || tar czf "$out/tests.tar.gz" -C "$out" $(cd "$out" && ls *.log)
  for ctx in 1024 65536 16384; do
    args=(--batches 1 32 128)
    [ $ctx = 1024 ] || args=(--context $ctx --batches 1 8 32 --iters 3 --prefill-tokens 256)
    timeout 240 $bin/dsv3-bench "${args[@]}" >"$out/ctx$ctx.md" 2>&1
    tar czf "$out/issue18.tar.gz" -C "$out" $(cd "$out" && ls ctx*.md) gpu.txt
  done
  grep -hE "copy bandwidth|^\| (1|8|32|128) \||^\| tiled grouped" "$out"/ctx*.md | cut -c1-160
  rm -f "$out"/*.log "$out"/ctx*.md
  exit 0
fi
if [ "$what" != bench ]; then
  run_tests $(cd $bin && ls gpu_*_test)
  grep -h "^tp " "$out/gpu_cuda_tp_test.log" 2>/dev/null
  grep -h "^errors" "$out/gpu_cuda_model_test.log" >"$out/errors.txt"
  grep -h "^lockstep\|^fixture FP8" "$out"/gpu_cuda_*_test.log
  for d in cpu cuda; do
    $bin/dsv3-generate --model $fixtures/ragged-fp8 --device $d --threads 8 \
      --prompt-ids 5,77,300,12 --max-new-tokens 12 2>&1 | tail -2 | sed "s/^/generate $d: /"
  done
  for tp in 1 2; do
    [ "$tp" -le "$gpus" ] || continue
    timeout 60 $bin/dsv3-generate --model $fixtures/smooth-fp8 --device cuda --tp $tp \
      --prompt-ids 5,77,300,12 --max-new-tokens 24 2>&1 | tail -1 | sed "s/^/generate smooth cuda tp$tp: /"
  done
fi
if [ "$what" != tests ]; then
  timeout 240 $bin/dsv3-bench 2>&1 | tee "$out/bench.md" | grep -E "^\|" | head -40
  if [ "$gpus" -ge 2 ]; then
    timeout 240 $bin/dsv3-bench --tp 2 2>&1 | tee "$out/bench-tp2.md" | grep -E "^\|" | head -20
  fi
fi
grep -hE "FAILED|PASSED" "$out"/gpu_*.log 2>/dev/null | sort | uniq -c | head -40
# The run tool brings back few files: the test logs travel as one archive.
tar czf "$out/logs.tar.gz" -C "$out" $(cd "$out" && ls *.log 2>/dev/null) && rm -f "$out"/*.log
