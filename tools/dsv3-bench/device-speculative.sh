#!/usr/bin/env bash
# MTP speculative decoding on the device machine (docs/perf/h200.md, "Speculative decoding"):
# the GPU tests of verify and draft steps under CUDA graphs (gpu_cuda_speculative_test, with the
# demo model extracted where the build expects it), the graph and engine tests, then
# `dsv3-bench --verify-tokens 1,2,3`. Binaries travel in a folder made by pack-device.sh
# (default .device; DEVICE_DIR names another, e.g. a copy in an ignored folder of the checkout
# the run tool sends):
#   EXTRA="" bash tools/dsv3-bench/pack-device.sh build-cuda
#   run(command="bash tools/dsv3-bench/device-speculative.sh", carry=[".device"])
# $OUT gets verify.md (the bench) and logs.tar.gz (every log). TESTS overrides the list of GPU
# tests; NO_BENCH=1 skips the bench.
set -uo pipefail
dev=${DEVICE_DIR:-.device}
out=${OUT:-/tmp/out}
mkdir -p "$out" /tmp/dsv3
tar xJf "$dev/lib.tar.xz" -C /tmp/dsv3
tar xJf "$dev/bin.tar.xz" -C "$dev"
export LD_LIBRARY_PATH=/tmp/dsv3/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fixtures=/tmp/dsv3/fixtures
mkdir -p $fixtures
for a in tests/data/fixtures/*.tar.xz; do tar xJf "$a" -C $fixtures; done
export DSV3_FIXTURES_DIR=$fixtures
# The tests look for the demo model (and the held-out ids) under the source and build folders
# they were built in (BUILT_IN, default /work/main): point that path here.
src=${BUILT_IN:-/work/main}
mkdir -p "$(dirname "$src")" && { [ -e "$src" ] || ln -s "$PWD" "$src"; }
mkdir -p build-cuda/data/demo-model
tar xJf tools/demo-model/dsv3-demo-fp8.tar.xz -C build-cuda/data/demo-model
bin=$dev/bin
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader | tee "$out/gpu.txt"
for t in ${TESTS:-gpu_cuda_speculative_test gpu_cuda_graphs_test gpu_cuda_engine_test}; do
  [ -x $bin/$t ] || continue
  timeout 240 $bin/$t --gtest_brief=1 >"$out/$t.log" 2>&1
  echo "$t rc=$?"
  grep -hE "^(speculative graphs|verify vs|demo model|graphs )|FAILED|PASSED|Failure|Expected|Which is|actual" \
    "$out/$t.log" | head -40
done
if [ -z "${NO_BENCH:-}" ]; then
  timeout 240 $bin/dsv3-bench --verify-tokens 1,2,3 --verify-batches 1,8,32,64 >"$out/verify.md" 2>&1
  echo "dsv3-bench rc=$?"
  cat "$out/verify.md"
fi
tar czf "$out/logs.tar.gz" -C "$out" $(cd "$out" && ls *.log) && rm -f "$out"/*.log
