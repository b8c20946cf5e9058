#!/usr/bin/env bash
# Measures main's dsv3-bench against the variants pack-variants.sh packed, interleaved over
# ROUNDS rounds (main, each variant, main, ...), on the device machine; each run's whole output
# goes to $OUT/ab-<name>-r<round>.md as it finishes, so a call cut short keeps what it measured.
# With --tests first, every variant's GPU tests run once (logs in $OUT/ab-tests.tar.gz).
# Usage (run tool, carry [".device"]): tools/dsv3-bench/device-ab.sh [--tests] ROUNDS [bench args]
# e.g. tools/dsv3-bench/device-ab.sh --tests 2 --batches 1 8 32 128
set -uo pipefail
tests=false
if [ "${1:-}" = --tests ]; then
  tests=true
  shift
fi
rounds=${1:-2}
shift || true
source "$(dirname "$0")/device-env.sh"
names=$(cd $bin && ls *.dsv3-bench 2>/dev/null | sed 's/\.dsv3-bench$//')
if $tests; then
  for name in $names; do
    for t in $(cd $bin && ls "$name".gpu_*_test 2>/dev/null); do
      timeout 300 $bin/$t --gtest_brief=1 >"$out/$t.log" 2>&1
      echo "$t rc=$?"
    done
  done
  (cd "$out" && ls *.gpu_*_test.log >/dev/null 2>&1 &&
    tar czf ab-tests.tar.gz *.gpu_*_test.log && rm -f *.gpu_*_test.log)
fi
for r in $(seq 1 "$rounds"); do
  for name in main $names; do
    exe=$bin/dsv3-bench
    [ "$name" = main ] || exe=$bin/$name.dsv3-bench
    timeout 300 $exe "$@" >"$out/ab-$name-r$r.md" 2>&1
    echo "== $name, round $r (rc=$?)"
    grep -E "^\| [0-9]+ \|" "$out/ab-$name-r$r.md" | head -8
  done
done
