#!/usr/bin/env bash
# Issue 16's runs on a machine with several GPUs (nvidia-h200-x2 / -x4 / -x8), in one call, at
# the GPU count it has (docs/parallel.md): the multi-GPU tests (tensor parallelism, data-parallel
# attention, custom all-reduce, each skipping what needs more GPUs), the all-reduce bench, then
# dsv3-bench under --tp N and --tp N --dp-attention at the same global batches, and on eight
# GPUs the whole model (3 dense + 58 MoE layers) with KV for 128 sequences of 4096 tokens.
# Binaries from .device/, made here by
#   EXTRA="tools/dsv3-all-reduce-bench" tools/dsv3-bench/pack-device.sh build-cuda
# Usage (run tool, repository root, carry [".device"]): tools/dsv3-bench/device-multi-gpu.sh
set -uo pipefail
source "$(dirname "$0")/device-env.sh"
fixtures=$DSV3_FIXTURES_DIR
gpus=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
nvidia-smi topo -m > "$out/topo.txt" 2>&1
for t in gpu_cuda_tp_test gpu_cuda_dp_attention_test gpu_custom_all_reduce_test; do
  timeout 400 $bin/$t --gtest_brief=1 >"$out/$t.log" 2>&1
  echo "$t rc=$?"
  grep -hE "^\[ +(FAILED|SKIPPED) +\]|Failure" "$out/$t.log" | head -20
done
timeout 120 $bin/dsv3-all-reduce-bench --gpus "$gpus" 2>&1 | tee "$out/all-reduce-$gpus.md"
# Speculative decoding on several ranks (MTP under --tp and --dp-attention) on the GPUs: greedy
# tokens of the demo model with K = 2 next to K = 0, and the drafts accepted (--stats).
# (device-env.sh put the demo model where the tests were compiled to find it.)
demo=$(grep -aoE '/[A-Za-z0-9_./+-]*/data/demo-model' $bin/gpu_cuda_speculative_test |
  head -1)/dsv3-demo-fp8
for flags in "--tp 1" "--tp 2" "--tp 2 --dp-attention"; do
  for k in 0 2; do
    timeout 120 $bin/dsv3-generate --model "$demo" --device cuda $flags --speculative-tokens $k \
      --prompt-ids "$(head -1 tools/demo-model/heldout_ids.txt | cut -d, -f1-40)" \
      --max-new-tokens 32 --stats 2>"$out/spec.err" |
      tail -1 | sed "s/^/generate $flags K=$k: /"
    tail -1 "$out/spec.err" | sed "s/^/  stats: /"
  done
done
# The same global batches under both splits (1 dense + 20 MoE layers, context 4096).
for split in "" --dp-attention; do
  echo "## dsv3-bench --tp $gpus $split"
  timeout 500 $bin/dsv3-bench --tp "$gpus" $split --dense-layers 1 --moe-layers 20 \
    --context 4096 --batches 8 64 256 --prefill-tokens 256 --iters 3 2>&1 |
    tee "$out/bench-tp$gpus$split.md" | grep -E "^\||^rank|memory" | head -30
done
if [ "$gpus" -ge 8 ]; then
  echo "## dsv3-bench --tp 8, the whole model"
  timeout 590 $bin/dsv3-bench --tp 8 --dense-layers 3 --moe-layers 58 --context 4096 \
    --batches 1 8 32 64 128 --prefill-tokens 4096 --iters 3 2>&1 |
    tee "$out/bench-v3-tp8.md" | grep -E "^\|" | head -40
fi
tar czf "$out/logs.tar.gz" -C "$out" $(cd "$out" && ls *.log 2>/dev/null) && rm -f "$out"/*.log
