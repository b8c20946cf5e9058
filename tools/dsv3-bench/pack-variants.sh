#!/usr/bin/env bash
# Packs main's GPU binaries (pack-device.sh) plus other builds as named variants, for one device
# call that measures them side by side (device-ab.sh): each NAME=BUILD_DIR adds that build's
# dsv3-bench as bin/NAME.dsv3-bench and GPU tests as bin/NAME.gpu_*_test (names that
# device-run.sh's own test loop does not pick up): those named in TESTS (default: the op table,
# model and graphs tests) and those main's build lacks (the variant's new tests). All of a
# variant's tests would not fit: the run tool takes 64 MiB with the working tree. VARIANT_EXTRA:
# more binaries of each variant's build, as bin/NAME.<basename> (e.g.
# "tools/dsv3-flash-decode-bench"); EXTRA: more of main's (pack-device.sh).
# Usage: tools/dsv3-bench/pack-variants.sh [build-dir] NAME=BUILD_DIR...   (build-dir: main's,
# default build-cuda; e.g. seesaw=/work/wt-seesaw/build-cuda)
set -euo pipefail
build=build-cuda
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then
  build=$1
  shift
fi
variants=$build/variants
tests=${TESTS:-gpu_cuda_op_table_test gpu_cuda_model_test gpu_cuda_graphs_test}
rm -rf "$variants" && mkdir -p "$variants"
extra=()
for spec in "$@"; do
  name=${spec%%=*}
  dir=${spec#*=}
  [[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || { echo "bad variant name: $name" >&2; exit 1; }
  [ -x "$dir/tools/dsv3-bench" ] || { echo "no $dir/tools/dsv3-bench" >&2; exit 1; }
  cp "$dir/tools/dsv3-bench" "$variants/$name.dsv3-bench"
  extra+=("variants/$name.dsv3-bench")
  for t in "$dir"/tests/gpu/gpu_*_test; do
    [ -x "$t" ] || continue
    base=$(basename "$t")
    [[ " $tests " == *" $base "* ]] || [ ! -e "$build/tests/gpu/$base" ] || continue
    cp "$t" "$variants/$name.$base"
    extra+=("variants/$name.$base")
  done
  for e in ${VARIANT_EXTRA:-}; do
    [ -x "$dir/$e" ] || { echo "no $dir/$e" >&2; exit 1; }
    cp "$dir/$e" "$variants/$name.$(basename "$e")"
    extra+=("variants/$name.$(basename "$e")")
  done
done
EXTRA="${EXTRA:-} ${extra[*]}" bash "$(dirname "$0")/pack-device.sh" "$build"
