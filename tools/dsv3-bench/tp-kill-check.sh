#!/usr/bin/env bash
# Kills the worker of a two-GPU generation mid-way (device machine with two GPUs, after
# pack-device.sh): rank 0 must exit non-zero within 10 s (its NCCL communicator is aborted, so a
# step waiting in a collective fails instead of hanging) and no process may be left behind.
# Usage (run tool, repository root, LD_LIBRARY_PATH as device-run.sh sets it):
#   tools/dsv3-bench/tp-kill-check.sh
set -uo pipefail
bin=.device/bin
log=${OUT:-/tmp}/tp-kill.log
$bin/dsv3-generate --model tests/data/fixtures/smooth-fp8 --device cuda --tp 2 \
  --prompt-ids 5,77,300 --max-new-tokens 50000 --min-tokens 50000 >"$log" 2>&1 &
rank0=$!
# Wait until both ranks are decoding (the worker is rank 0's child).
for _ in $(seq 60); do
  sleep 1
  worker=$(pgrep -P "$rank0" -f dsv3-generate | head -1)
  [ -n "$worker" ] && [ "$(nvidia-smi --query-compute-apps=pid --format=csv,noheader | wc -l)" -ge 2 ] && break
done
sleep 3
echo "killing worker $worker of rank 0 $rank0"
start=$(date +%s%N)
kill -9 "$worker"
wait "$rank0"
rc=$?
end=$(date +%s%N)
echo "tp-kill: rank 0 exit code $rc after $(( (end - start) / 1000000 )) ms"
sleep 1
if pgrep -f "$bin/dsv3-generate" >/dev/null; then
  echo "tp-kill: processes left:"; pgrep -af "$bin/dsv3-generate"
else
  echo "tp-kill: no dsv3-generate process left"
fi
tail -3 "$log"
