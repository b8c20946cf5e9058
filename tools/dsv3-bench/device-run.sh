#!/usr/bin/env bash
# One whole check-and-bench sequence on the device machine (docs/cuda.md, "Running on the
# H200"): binaries and their shared libraries travel in .device/ (bin.tar.xz, lib.tar.xz), built here
# with build-cuda. The fixtures travel as their archives in the working tree and are extracted
# to /tmp/dsv3/fixtures, where DSV3_FIXTURES_DIR points the tests (tests/test_util.h FixturePath).
# Usage (inside the `run` tool, repository root):
#   tools/dsv3-bench/device-run.sh [tests|bench|all|issue18|pairs]
# issue18: only issue 18's rows (context 1024 at batches 1, 32 and 128 with the 4096-token
# prefill; contexts 16384 and 65536 at 1, 8 and 32), every table in one archive
# ($OUT/issue18.tar.gz: the run tool brings back at most eight files).
# pairs: the prefill grouped GEMM's forwarded pairs (pack with EXTRA=tools/dsv3-grouped-gemm-bench):
# checks (a 90-s guard against a hang), its GPU test, the V3 shapes timed, the 4096-token prefill
# with and without them (two rounds), and their L2 fabric traffic (Nsight Compute), in
# $OUT/pairs.tar.gz.
# On a machine with two GPUs (nvidia-h200-x2) it also runs the tensor-parallel test and the
# bench at --tp 2. pack-device.sh makes .device/.
set -uo pipefail
what=${1:-all}
source "$(dirname "$0")/device-env.sh"
fixtures=$DSV3_FIXTURES_DIR
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$out/gpu.txt"
gpus=$(nvidia-smi -L | wc -l)
if [ "$what" = pairs ]; then
  g=$bin/dsv3-grouped-gemm-bench
  timeout 90 $g --checks >"$out/checks.md" 2>&1; echo "checks rc=$?"; cut -c1-140 "$out/checks.md"
  if ! grep -q FAIL "$out/checks.md" && grep -q "kbm fwd pairs" "$out/checks.md"; then
    timeout 120 $bin/gpu_cuda_fp8_grouped_gemm_test --gtest_brief=1 >"$out/test.log" 2>&1
    echo "test rc=$?"; grep -E "rel err|FAILED|PASSED" "$out/test.log"
    timeout 90 $g --v3 >"$out/v3.md" 2>&1; grep -E "us,|FAIL" "$out/v3.md" | cut -c1-150
    for v in pairs plain pairs plain; do
      f=""; [ $v = pairs ] && f=--grouped-forward-pairs
      timeout 80 $bin/dsv3-bench --batches 1 --iters 2 --prefill-tokens 4096 $f \
        >>"$out/pf-$v.md" 2>&1
      echo "$v: $(grep -E '^\| tiled grouped' "$out/pf-$v.md" | tail -1 | cut -c1-120)"
    done
    ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
    timeout 300 $ncu --clock-control none -k regex:Fp8GroupedGemm --metrics \
gpu__time_duration.sum,dram__bytes_read.sum,lts__t_sectors_srcunit_tex.sum,\
lts__t_sectors_srcunit_ltcfabric.sum,\
lts__ltcfabric2ltc_cycles_active.avg.pct_of_peak_sustained_elapsed \
      $g --v3 --once >"$out/ncu.txt" 2>&1
    grep -E "Fp8GroupedGemm|duration|bytes_read|srcunit|ltcfabric2ltc" "$out/ncu.txt" | cut -c1-120
  fi
  tar czf "$out/pairs.tar.gz" -C "$out" $(cd "$out" && ls *.md *.log *.txt 2>/dev/null)
  exit 0
fi
if [ "$what" = issue18 ]; then
  timeout 240 $bin/dsv3-bench --batches 1 32 128 >"$out/ctx1024.md" 2>&1
  for ctx in 16384 65536; do
    timeout 240 $bin/dsv3-bench --context $ctx --batches 1 8 32 --iters 3 --prefill-tokens 256 \
      >"$out/ctx$ctx.md" 2>&1
  done
  grep -hE "copy bandwidth|^\| (1|8|32|128) \||^\| tiled grouped" "$out"/ctx*.md | cut -c1-160
  tar czf "$out/issue18.tar.gz" -C "$out" ctx1024.md ctx16384.md ctx65536.md gpu.txt
  exit 0
fi
if [ "$what" != bench ]; then
  for t in $(cd $bin && ls gpu_*_test); do
    timeout 300 $bin/$t --gtest_brief=1 >"$out/$t.log" 2>&1
    echo "$t rc=$?"
  done
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
