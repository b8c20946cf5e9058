#!/usr/bin/env bash
# The daemon under load on one GPU (device machine, after pack-device.sh with the server tools):
# dsv3-server --device cuda on a fixture checkpoint (token-id mode), STREAMS concurrent Generate
# streams for DURATION seconds from dsv3-server-load. Batch sizes change every step, so decode
# layers keep being captured and replayed as CUDA graphs. Prints the load summary, the server's
# KV and stream metrics after the load, GPU memory before / during / after, and the exit code
# of a SIGTERM (0 expected).
#   STREAMS=64 DURATION=30 tools/dsv3-bench/server-load-gpu.sh
# MODEL=DIR loads another checkpoint than the smooth-fp8 fixture (device-env.sh extracts it).
set -uo pipefail
source "$(dirname "$0")/device-env.sh"  # bin, out, fixtures, libraries
model=${MODEL:-$DSV3_FIXTURES_DIR/smooth-fp8}
streams=${STREAMS:-64}
duration=${DURATION:-30}
port=50561
metrics_port=9561
gpu_mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader -i 0; }
metrics() {
  python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$metrics_port/metrics').read().decode())" |
    grep -E "^dsv3_(kv_blocks_used|active_streams|requests_total|request_errors)" | head -8
}
$bin/dsv3-server --device cuda --model "$model" --listen 127.0.0.1:$port \
  --metrics-listen 127.0.0.1:$metrics_port --max-running-seqs 128 >/tmp/server.log 2>&1 &
server=$!
for _ in $(seq 120); do
  $bin/dsv3-client --server 127.0.0.1:$port --health >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { tail -5 /tmp/server.log; exit 1; }
  sleep 0.5
done
echo "gpu memory before load: $(gpu_mem)"
( sleep $((duration / 2)); echo "gpu memory during load: $(gpu_mem)" ) &
sampler=$!
$bin/dsv3-server-load --server 127.0.0.1:$port --streams "$streams" --duration-s "$duration" \
  --max-tokens 64 --prompt-tokens 32
wait $sampler
echo "gpu memory after load: $(gpu_mem)"
metrics
kill -TERM $server
wait $server
echo "server exit code after SIGTERM: $?"
grep -iE "error|abort|fatal" /tmp/server.log | head -5
