#!/usr/bin/env bash
# compute-sanitizer over every GPU test on the device machine: memcheck (out-of-bounds and
# misaligned accesses, leaks of device memory) and racecheck (shared-memory hazards), one log per
# test and tool. Same setup as device-run.sh: binaries from .device/ (pack-device.sh), fixtures
# extracted to /tmp/dsv3/fixtures. Usage (inside the `run` tool, repository root):
#   tools/dsv3-bench/sanitize-gpu.sh [memcheck|racecheck|all] [TEST_FILTER]
# TEST_FILTER is a gtest filter (default '*'); under the sanitizer kernels run 10-100x slower,
# so each test gets SANITIZER_TIMEOUT seconds (default 600); SANITIZE_TESTS names the test
# binaries (default every gpu_*_test) and CUDA graphs are replayed less (DSV3_... none: the tests pick their
# own sizes). Exit status: non-zero when any run reports an error.
#
# racecheck does not model the completion semantics of mbarriers (cp.async.bulk / TMA
# transactions, mbarrier.try_wait) nor cp.async's wait_group ordering through them; a hazard it
# reports between an asynchronous copy and a read that an mbarrier orders is a false positive.
# docs/cuda.md ("Sanitizers") goes through the ones known in fp8_grouped_gemm.cu.
set -uo pipefail
what=${1:-all}
filter=${2:-*}
source "$(dirname "$0")/device-env.sh"

sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
[ -x "$sanitizer" ] || { echo "compute-sanitizer not found"; exit 2; }
"$sanitizer" --version | head -2 | tee "$out/sanitizer-version.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$out/gpu.txt"

case "$what" in
  memcheck) tools=(memcheck) ;;
  racecheck) tools=(racecheck) ;;
  *) tools=(memcheck racecheck) ;;
esac
# memcheck also checks device-memory leaks at exit and API errors; racecheck reports every
# hazard (not only the first) with the source lines (the binaries carry -lineinfo).
declare -A options=(
  [memcheck]="--tool memcheck --leak-check full --report-api-errors all"
  [racecheck]="--tool racecheck --racecheck-report all"
)

status=0
for tool in "${tools[@]}"; do
  for t in ${SANITIZE_TESTS:-$(cd $bin && ls gpu_*_test)}; do
    log="$out/$tool-$t.log"
    # shellcheck disable=SC2086
    timeout "${SANITIZER_TIMEOUT:-600}" "$sanitizer" ${options[$tool]} --error-exitcode 99 --print-limit 200 \
      $bin/$t --gtest_brief=1 --gtest_filter="$filter" >"$log" 2>&1
    rc=$?
    summary=$(grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY" "$log" | tr '\n' ' ')
    echo "$tool $t rc=$rc $summary"
    [ "$rc" -eq 0 ] || status=1
  done
done
# Hazards grouped by source line: what docs/cuda.md's analysis starts from.
grep -hoE "(Race reported|Error|Warning).*|at .*\.cu(h)?:[0-9]+" "$out"/racecheck-*.log 2>/dev/null |
  sort | uniq -c | sort -rn | head -60 >"$out/racecheck-lines.txt"
tar czf "$out/sanitize-logs.tar.gz" -C "$out" $(cd "$out" && ls *.log 2>/dev/null) && rm -f "$out"/*.log
exit $status
