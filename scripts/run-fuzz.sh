#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in their own build directory and runs each
# for a bounded time on its seed corpus in tests/fuzz/corpus/<name>: the tokenizer, config.json,
# safetensors header, checkpoint index and request validation fuzzers side by side for SECONDS
# (so the whole run takes about SECONDS after the build, sharing the machine's cores).
# Exits non-zero when a fuzzer finds a crash, a sanitizer report or a broken invariant (the
# input is kept in BUILD_DIR/fuzz-artifacts/<name>/; its log in BUILD_DIR/fuzz-logs/).
#
#   scripts/run-fuzz.sh [SECONDS=60] [BUILD_DIR=build-fuzz]
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(realpath -m "${2:-$root/build-fuzz}")"
targets=(tokenizer config safetensors checkpoint_index validation)

mkdir -p "$build/fuzz-logs"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DDSV3_CUDA=OFF -DDSV3_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log"; exit 1; }
ninja -C "$build" "${targets[@]/%/_fuzz}"

# Runs fuzzer NAME for the given seconds. New inputs go to a working corpus inside the build dir;
# the committed seeds stay as they are.
fuzz() {
  local name="$1" max_len=8192
  if [ "$name" = tokenizer ]; then max_len=4096; fi
  local corpus="$build/fuzz-corpus/$name" artifacts="$build/fuzz-artifacts/$name"
  mkdir -p "$corpus" "$artifacts"
  "$build/tests/fuzz/${name}_fuzz" -max_total_time="$seconds" -max_len="$max_len" -timeout=30 \
    -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "$corpus" "$root/tests/fuzz/corpus/$name"
}

pids=()
for name in "${targets[@]}"; do
  fuzz "$name" >"$build/fuzz-logs/$name.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!targets[@]}"; do
  if wait "${pids[$i]}"; then
    echo "fuzz ${targets[$i]}: $(grep -o 'stat::number_of_executed_units: [0-9]*' \
      "$build/fuzz-logs/${targets[$i]}.log" || true)"
  else
    echo "fuzz ${targets[$i]}: FAILED (log: $build/fuzz-logs/${targets[$i]}.log)"
    tail -n 60 "$build/fuzz-logs/${targets[$i]}.log"
    status=1
  fi
done
exit "$status"
