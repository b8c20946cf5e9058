#!/usr/bin/env bash
# The HTTP API against gRPC on one workload: starts dsv3-server (embedded demo model, CPU) with
# --http-listen, then runs dsv3-server-load with STREAMS concurrent streams for DURATION seconds
# per run, alternating gRPC Generate and HTTP /v1/completions (streamed) ROUNDS times each, and
# prints one JSON line per run and a Markdown table of the means (for docs/perf/server.md).
#   BUILD_DIR=build STREAMS=64 DURATION=20 ROUNDS=2 bash bench/server/http_vs_grpc.sh
# BIN_DIR: where dsv3-server and dsv3-server-load are (default BUILD_DIR/server; the device
# machine's /tmp/dsv3/bin); DEVICE: the server's --device (default auto); MODEL: a --model
# directory (default: the embedded demo model).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD_DIR:-build}
streams=${STREAMS:-64}
duration=${DURATION:-20}
rounds=${ROUNDS:-2}
max_tokens=${MAX_TOKENS:-32}
prompt_tokens=${PROMPT_TOKENS:-32}
port=${PORT:-50561}
http_port=${HTTP_PORT:-50562}
bin=${BIN_DIR:-$build/server}
device=${DEVICE:-auto}
model_flag=()
[[ -n ${MODEL:-} ]] && model_flag=(--model "$MODEL")
python=$(command -v /usr/bin/python3 || command -v python3)
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin/dsv3-server" --device "$device" "${model_flag[@]}" --listen 127.0.0.1:$port \
  --http-listen 127.0.0.1:$http_port --metrics-listen "" --max-running-seqs 128 \
  >"$work/server.log" 2>&1 &
server=$!
healthy() {
  "$python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$http_port/health', timeout=2)" \
    2>/dev/null
}
until healthy; do
  kill -0 $server || { cat "$work/server.log"; exit 1; }
  sleep 0.2
done
for round in $(seq "$rounds"); do
  for protocol in grpc http; do
    extra=()
    [[ $protocol == http ]] && extra=(--http "127.0.0.1:$http_port")
    "$bin/dsv3-server-load" --server 127.0.0.1:$port --streams "$streams" \
      --duration-s "$duration" --max-tokens "$max_tokens" --prompt-tokens "$prompt_tokens" \
      "${extra[@]}" | tee -a "$work/runs.jsonl" || true  # errors are in the table
  done
done
kill -TERM $server
wait $server || true
"$python" - "$work/runs.jsonl" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
print("| front end | runs | output tokens/s | TTFT p50 (ms) | TTFT p99 (ms) | errors |")
print("|---|---|---|---|---|---|")
for p in ("grpc", "http"):
    r = [x for x in runs if x["protocol"] == p]
    mean = lambda k: sum(x[k] for x in r) / len(r)
    print(f"| {p} | {len(r)} | {mean('tokens_per_s'):.1f} | {mean('ttft_p50_ms'):.1f} | "
          f"{mean('ttft_p99_ms'):.1f} | {sum(x['errors'] for x in r)} |")
PY
