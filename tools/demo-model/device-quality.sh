#!/usr/bin/env bash
# The demo model's quality numbers on the device machine (docs/quality.md): transformers
# references (make_references.py), dsv3-eval on the CPU and the GPU against them, and the GPU
# model test. Binaries travel in .device/ (tools/dsv3-bench/pack-device.sh with a CUDA build in
# build-cuda, EXTRA="tools/dsv3-eval"):
#   run(command="bash tools/demo-model/device-quality.sh", carry=[".device"])
# $OUT gets refs.json, evals.jsonl (one line per dsv3-eval run), logs.tar.gz (every log), and
# the golden reference rows tests/golden/demo_model_logits_test.cc reads (the first 47 rows of
# held-out window 0 from the float32 and the ideal-FP8 transformers runs).
set -uo pipefail
source tools/dsv3-bench/device-env.sh
mkdir -p /work && { [ -e /work/main ] || ln -s "$PWD" /work/main; }
# The GPU test finds the demo model where the CUDA build extracted it.
mkdir -p build-cuda/data/demo-model
tar xJf tools/demo-model/dsv3-demo-fp8.tar.xz -C build-cuda/data/demo-model
model=build-cuda/data/demo-model/dsv3-demo-fp8
ids=tools/demo-model/heldout_ids.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 tools/demo-model/make_references.py --model $model --ids $ids --out /tmp/refs \
  > "$out/refs.log" 2>&1 || { tail -30 "$out/refs.log"; exit 1; }
cp /tmp/refs/refs.json "$out/"
python3 - <<'PY'
import os
import numpy as np
out = os.environ.get("OUT", "/tmp/out")
for name in ("f32", "fp8emu"):
    rows = np.load(f"/tmp/refs/{name}.npy", mmap_mode="r")[:47]
    np.save(f"{out}/golden_{name}.npy", np.ascontiguousarray(rows, dtype="<f4"))
PY
run_eval() {  # name, model dir, base, dsv3-eval flags...
  local name=$1 dir=$2 base=$3
  shift 3
  $bin/dsv3-eval --model "$dir" --ids-file $ids --threads 16 --kl-base "$base" "$@" \
    > /tmp/eval.json 2> "$out/eval-$name.log"
  local rc=$?
  echo "{\"run\": \"$name\", \"rc\": $rc, \"result\": $(cat /tmp/eval.json || true)}" |
    tee -a "$out/evals.jsonl"
}
bf16=/tmp/refs/dsv3-demo-bf16
run_eval cpu-fp8 $model /tmp/refs/f32.npy --device cpu
run_eval cpu-fp8-ideal-vs-fp8emu $model /tmp/refs/fp8emu.npy --device cpu --cpu-emulation fp8
run_eval cpu-fp8-gpu-emulation $model /tmp/refs/f32.npy --device cpu --cpu-emulation gpu
run_eval cuda-fp8 $model /tmp/refs/f32.npy --device cuda
run_eval cuda-fp8-vs-ideal $model /tmp/refs/fp8emu.npy --device cuda
run_eval cpu-bf16 $bf16 /tmp/refs/bf16_f32.npy --device cpu
run_eval cpu-bf16-gpu-emulation $bf16 /tmp/refs/bf16_f32.npy --device cpu --cpu-emulation bf16
run_eval cuda-bf16 $bf16 /tmp/refs/bf16_f32.npy --device cuda
timeout 300 $bin/gpu_cuda_model_test --gtest_brief=1 > "$out/gpu_cuda_model_test.log" 2>&1
echo "gpu_cuda_model_test rc=$?"
grep -h "^quality\|FAILED\|PASSED" "$out/gpu_cuda_model_test.log"
cat "$out/refs.json"
tar czf "$out/logs.tar.gz" -C "$out" $(cd "$out" && ls *.log gpu.txt) && (cd "$out" && rm -f *.log gpu.txt)
