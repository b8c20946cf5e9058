#!/usr/bin/env bash
# The tests that need no GPU (labels unit, golden, e2e) built and run under AddressSanitizer
# (with LeakSanitizer) and UndefinedBehaviorSanitizer, CPU backend only, in their own build
# directory. Any report fails the run: UBSan does not recover, and the e2e servers are stopped
# with SIGTERM (tests/e2e/server_process.h), so LeakSanitizer checks them at exit too (a leak
# makes the exit status non-zero, which the tests check).
#
#   scripts/test-sanitized.sh [BUILD_DIR=build-asan]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(realpath -m "${1:-$root/build-asan}")"

# -O1: a third of -O2's compile time, and the tests' CPU model runs stay fast enough. The tests'
# own sources at -Og (tests/CMakeLists.txt: under ASan it compiles faster than -O0; the model
# runs in the engine's code, not in theirs). Unity sources as in scripts/test.sh.
cmake -S "$root" -B "$build" -G Ninja -DDSV3_CUDA=OFF -DDSV3_SANITIZE=address,undefined \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" -DDSV3_TEST_COMPILE_OPTIONS=-Og \
  -DCMAKE_UNITY_BUILD=ON -DDSV3_TEST_TIMEOUT=2400
# Only what the tests run (tests/CMakeLists.txt: dsv3_cpu_tests), not the benchmarks.
cmake --build "$build" -j "$(nproc)" --target dsv3_cpu_tests
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Not the image check: it compares a release build's libraries with the runtime stage's packages,
# and a sanitizer build links libasan/libubsan.
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" -L 'unit|golden|e2e' -E deploy_dockerfile
