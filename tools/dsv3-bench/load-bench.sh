#!/usr/bin/env bash
# Checkpoint loading at disk speed (docs/perf/load.md), on the device machine after
# `EXTRA=tools/dsv3-load-bench tools/dsv3-bench/pack-device.sh`:
#   1. writes a synthetic DeepSeek-V3 checkpoint at the real layer sizes (1 dense + 3 MoE layers,
#      embedding and head: 38.8 GB in 9 shards; make-synthetic-checkpoint.py) to local disk,
#      unless CKPT_DIR already holds one (checks the free space first);
#   2. reads its files with `cat > /dev/null` cold and warm (and 8 `cat`s at once, for what the
#      disk gives to parallel readers);
#   3. loads it onto GPU 0 with dsv3-load-bench (ModelWeights::Load, as dsv3-server does) cold and
#      warm, buffered and O_DIRECT, and rank 0 of --tp 8 (its slices only);
#   4. prints a markdown table and writes it with the raw JSON lines under $OUT.
# Cold means evicted from the page cache: `sync; echo 3 > /proc/sys/vm/drop_caches` where
# permitted (root), and always posix_fadvise(DONTNEED) on every file; the table says which.
#   CKPT_DIR=/tmp/dsv3/synthetic-v3 THREADS=8 tools/dsv3-bench/load-bench.sh
# DEVICE=cpu (a dry run of the script without a GPU; BIN=build/tools there). QUICK=1 runs only cat and dsv3 (buffered), cold and warm: for a slow disk, where all runs would
# not fit in one 10-minute call; a second call on the same machine finds the checkpoint written.
set -uo pipefail
out=${OUT:-/tmp/out}
dir=${CKPT_DIR:-/tmp/dsv3/synthetic-v3}
threads=${THREADS:-8}
mkdir -p "$out" /tmp/dsv3
if [ -f .device/lib.tar.xz ]; then
  tar xJf .device/lib.tar.xz -C /tmp/dsv3
  tar xJf .device/bin.tar.xz -C .device
fi
export LD_LIBRARY_PATH=/tmp/dsv3/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
bin=${BIN:-/tmp/dsv3/bin}
results=$out/load.jsonl
: >"$results"

if [ ! -f "$dir/config.json" ]; then
  mkdir -p "$dir"
  avail=$(df --output=avail -B1 "$dir" | tail -1)
  if [ "$avail" -lt 42000000000 ]; then
    echo "need 42 GB free at $dir for the checkpoint; $avail bytes are" >&2
    exit 1
  fi
  start=$(date +%s.%N)
  python3 tools/dsv3-bench/make-synthetic-checkpoint.py "$dir" 2>"$out/write.log" || exit 1
  sync
  echo "wrote $dir in $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s"
fi
files=("$dir"/*.safetensors)
bytes=$(du -cb "${files[@]}" | tail -1 | cut -f1)
echo "checkpoint: ${#files[@]} shards, $bytes bytes at $dir ($(df -h --output=source,fstype "$dir" | tail -1))"
if [ "$(df --output=fstype "$dir" | tail -1)" = tmpfs ]; then
  echo "WARNING: $dir is on tmpfs (memory): 'cold' cannot be cold; set CKPT_DIR to a disk" >&2
fi

evict_method=fadvise
evict() {
  sync
  if (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then evict_method="drop_caches+fadvise"; fi
  python3 - "${files[@]}" <<'PY'
import os, sys
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
  # What is still cached (fincore, where util-linux has it), as evidence the eviction worked.
  command -v fincore >/dev/null && fincore -b --output=RES "${files[@]}" 2>/dev/null |
    awk 'NR > 1 {s += $1} END {printf "  page cache after eviction: %.2f GB\n", s / 1e9}'
}

# record NAME CACHE SECONDS BYTES: one JSON line.
record() {
  python3 -c "import json,sys; n,c,s,b=sys.argv[1:5]; print(json.dumps({'what': n, 'cache': c,
    'bytes': int(b), 'seconds': round(float(s), 3), 'gb_per_s': round(int(b) / 1e9 / float(s), 3)}))" \
    "$@" | tee -a "$results"
}

timed_cat() {  # NAME CACHE
  local start end
  start=$(date +%s.%N)
  cat "${files[@]}" >/dev/null
  end=$(date +%s.%N)
  record "$1" "$2" "$(python3 -c "print($end - $start)")" "$bytes"
}

timed_parallel_cat() {  # NAME CACHE
  local start end
  start=$(date +%s.%N)
  printf '%s\n' "${files[@]}" | xargs -P 8 -n 1 sh -c 'cat "$0" >/dev/null'
  end=$(date +%s.%N)
  record "$1" "$2" "$(python3 -c "print($end - $start)")" "$bytes"
}

load() {  # NAME CACHE READER_THREADS [dsv3-load-bench flags...]
  local name=$1 cache=$2 readers=$3
  shift 3
  local log json
  log=$($bin/dsv3-load-bench --model "$dir" --device "${DEVICE:-cuda}" --reader-threads "$readers" \
    "$@" 2>&1)
  echo "$log" >>"$out/dsv3-load.log"
  json=$(echo "$log" | grep '^{' | tail -1)
  if [ -z "$json" ]; then
    echo "$name: dsv3-load-bench failed:" >&2
    echo "$log" | tail -3 >&2
    return
  fi
  python3 -c "import json,sys; d=json.loads(sys.argv[3]); d.update(what=sys.argv[1], cache=sys.argv[2],
    seconds=d['load_s']); print(json.dumps(d))" "$name" "$cache" "$json" | tee -a "$results"
}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
evict; timed_cat "cat" cold
timed_cat "cat" warm
evict; load "dsv3 buffered" cold "$threads"
load "dsv3 buffered" warm "$threads"
if [ -z "${QUICK:-}" ]; then
  evict; timed_parallel_cat "8 x cat" cold
  evict; load "dsv3 O_DIRECT" cold "$threads" --direct-io
  load "dsv3 O_DIRECT" warm "$threads" --direct-io
  evict; load "dsv3 buffered, 16 threads" cold 16
  load "dsv3 buffered, 16 threads" warm 16
  evict; load "dsv3 tp8 rank 0" cold "$threads" --tp 8 --rank 0
  load "dsv3 tp8 rank 0" warm "$threads" --tp 8 --rank 0
fi
grep -h "loading: \(shard 1/\|rank\|read \)" "$out/dsv3-load.log" | head -6

python3 - "$results" "$evict_method" <<'PY' | tee "$out/load.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cat = {r["cache"]: r["gb_per_s"] for r in rows if r["what"] == "cat"}
print(f"Cold = evicted with {sys.argv[2]}. GB = 1e9 bytes.\n")
print("| run | cache | GB read | seconds | GB/s | vs cat (same cache) |")
print("|---|---|---|---|---|---|")
for r in rows:
    ref = cat.get(r["cache"])
    pct = f"{100 * r['gb_per_s'] / ref:.0f}%" if ref and r["what"] != "cat" else ""
    print(f"| {r['what']} | {r['cache']} | {r['bytes'] / 1e9:.2f} | {r['seconds']:.2f} | "
          f"{r['gb_per_s']:.2f} | {pct} |")
PY
