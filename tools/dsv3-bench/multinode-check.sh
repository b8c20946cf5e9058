#!/usr/bin/env bash
# The per-node launch on GPUs, as two "nodes" of one 4-GPU host (device machine nvidia-h200-x4,
# after pack-device.sh): node 0 sees GPUs 0,1 and node 1 GPUs 2,3; each runs
# `--tp 4 --nnodes 2 --node-rank K --dist-init-addr 127.0.0.1:PORT` and spawns one local rank
# (LOCAL_RANK 1 = its second visible GPU), with NCCL between all four.
#  1. greedy tokens of the 2 x 2 run equal those of `--tp 4` on one process;
#  2. killing node 1's worker mid-generation ends both nodes non-zero within 10 s, no process left.
# NCCL_DEBUG=INFO lines of the first run go to $OUT/multinode-nccl.log (transports chosen).
# Usage (run tool, repository root, carry [".device"]; device-env.sh unpacks it):
#   tools/dsv3-bench/multinode-check.sh
set -uo pipefail
source "$(dirname "$0")/device-env.sh"  # bin, out, fixtures, libraries
out=${OUT:-/tmp}
model=$DSV3_FIXTURES_DIR/smooth-fp8
gen=("$bin/dsv3-generate" --model "$model" --device cuda --prompt-ids 5,77,300)
node() {  # node RANK GPUS PORT ARGS...
  local rank=$1 gpus=$2 port=$3
  shift 3
  CUDA_VISIBLE_DEVICES=$gpus "${gen[@]}" --tp 4 --nnodes 2 --node-rank "$rank" \
    --dist-init-addr "127.0.0.1:$port" "$@"
}

ref=$("${gen[@]}" --tp 4 --max-new-tokens 64 2>"$out/multinode-ref.log")
NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET node 1 2,3 29611 --max-new-tokens 64 \
  >"$out/multinode-node1.out" 2>"$out/multinode-nccl.log" &
node1=$!
got=$(node 0 0,1 29611 --max-new-tokens 64 2>"$out/multinode-node0.log")
rc0=$?
wait $node1
rc1=$?
echo "multinode: node 0 exit $rc0, node 1 exit $rc1"
if [ "$got" = "$ref" ] && [ -n "$ref" ]; then
  echo "multinode: 2 nodes x 2 GPUs give the tokens of --tp 4"
else
  echo "multinode: tokens differ"; echo "tp 4: $ref"; echo "2x2:  $got"
fi
grep -h "via \|NET/" "$out/multinode-nccl.log" | sort -u | head -8

node 0 0,1 29612 --max-new-tokens 150000 --min-tokens 150000 >"$out/multinode-kill0.log" 2>&1 &
n0=$!
node 1 2,3 29612 --max-new-tokens 150000 --min-tokens 150000 >"$out/multinode-kill1.log" 2>&1 &
n1=$!
worker=
for _ in $(seq 60); do
  sleep 1
  worker=$(pgrep -P "$n1" | head -1)
  [ -n "$worker" ] && break
done
sleep 10
if [ -z "$worker" ] || ! kill -0 "$n0" 2>/dev/null || ! kill -0 "$n1" 2>/dev/null; then
  echo "multinode: no worker on node 1, or a node already gone"; exit 1
fi
start=$(date +%s%N)
kill -9 "$worker"
wait "$n1"; rc1=$?
t1=$(date +%s%N)
wait "$n0"; rc0=$?
t0=$(date +%s%N)
echo "multinode: killed node 1's worker; node 1 exit $rc1 after $(( (t1 - start) / 1000000 )) ms," \
  "node 0 exit $rc0 after $(( (t0 - start) / 1000000 )) ms"
sleep 1
if pgrep -f "$model" >/dev/null; then
  echo "multinode: processes left:"; pgrep -af "$model"
else
  echo "multinode: no dsv3-generate process left"
fi
tail -3 "$out/multinode-kill0.log" "$out/multinode-kill1.log" | cut -c1-300
