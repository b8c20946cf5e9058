#!/usr/bin/env bash
# Checks the Dockerfile against a build (scripts/check-dockerfile.py says what is checked),
# then plants each defect of tests/deploy/dockerfile-mutations.txt in a copy of it and requires
# the check to catch it, so that a check that quietly stopped working fails too.
#   scripts/check-dockerfile.sh [BUILD_DIR]   (default: build)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
# Debian's python3 (a pyenv or venv python3 earlier on PATH is fine too: only the standard
# library is needed).
python=/usr/bin/python3
[ -x "$python" ] || python=python3
check=("$python" "$root/scripts/check-dockerfile.py" "$build")

"${check[@]}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
planted=0
while IFS='|' read -r expression expected; do
  [[ -z "$expression" || "$expression" == \#* ]] && continue
  sed "$expression" "$root/Dockerfile" > "$tmp/Dockerfile"
  if cmp -s "$root/Dockerfile" "$tmp/Dockerfile"; then
    echo "check-dockerfile: mutation '$expression' changes nothing (update the list)" >&2
    exit 1
  fi
  if out="$("${check[@]}" --dockerfile "$tmp/Dockerfile" 2>&1)"; then
    echo "check-dockerfile: planted '$expression' and the check passed" >&2
    exit 1
  fi
  if [[ "$out" != *"$expected"* ]]; then
    echo "check-dockerfile: planted '$expression'; expected '$expected', got:" >&2
    echo "$out" >&2
    exit 1
  fi
  planted=$((planted + 1))
done < "$root/tests/deploy/dockerfile-mutations.txt"
echo "check-dockerfile: all $planted planted defects caught"
