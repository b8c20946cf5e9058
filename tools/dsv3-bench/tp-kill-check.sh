#!/usr/bin/env bash
# Kills the worker of a two-GPU generation mid-way (device machine with two GPUs, after
# pack-device.sh): rank 0 must exit non-zero within 10 s (its NCCL communicator is aborted, so a
# step waiting in a collective fails instead of hanging) and no process may be left behind.
# Usage (run tool, repository root, carry [".device"]; device-env.sh unpacks it):
#   tools/dsv3-bench/tp-kill-check.sh
set -uo pipefail
source "$(dirname "$0")/device-env.sh"  # bin, out, fixtures, libraries
fixtures=$DSV3_FIXTURES_DIR
log=${OUT:-/tmp}/tp-kill.log
$bin/dsv3-generate --model $fixtures/smooth-fp8 --device cuda --tp 2 \
  --prompt-ids 5,77,300 --max-new-tokens 150000 --min-tokens 150000 >"$log" 2>&1 &
rank0=$!
# The worker is rank 0's child (the launcher forks and execs it); give both time to load and
# start decoding.
worker=
for _ in $(seq 30); do
  sleep 1
  worker=$(pgrep -P "$rank0" | head -1)
  [ -n "$worker" ] && break
done
sleep 5
if [ -z "$worker" ] || ! kill -0 "$rank0" 2>/dev/null; then
  echo "tp-kill: no worker found or rank 0 already gone"; exit 1
fi
echo "tp-kill: killing worker $worker of rank 0 $rank0"
start=$(date +%s%N)
kill -9 "$worker"
wait "$rank0"
rc=$?
end=$(date +%s%N)
echo "tp-kill: rank 0 exit code $rc after $(( (end - start) / 1000000 )) ms"
sleep 1
if pgrep -f "fixtures/smooth-fp8" >/dev/null; then
  echo "tp-kill: processes left:"; pgrep -af "fixtures/smooth-fp8"
else
  echo "tp-kill: no dsv3-generate process left"
fi
grep -v "^[0-9 ]*$" "$log" | cut -c1-300 | tail -5
