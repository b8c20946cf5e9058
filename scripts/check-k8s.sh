#!/usr/bin/env bash
# Validates the Kubernetes manifests under deploy/ (tests/deploy/check-k8s.mjs says what is
# checked), then plants each defect of tests/deploy/mutations.txt in a copy of deploy/k8s and
# requires the check to catch it, so that a check that quietly stopped working fails too.
# Installs its npm packages (package-lock.json) into BUILD_DIR/deploy-check once per lock.
#   scripts/check-k8s.sh [BUILD_DIR]   (default: build)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$root/build}/deploy-check"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "check-k8s: needs node and npm (scripts/install-deps.sh installs them)" >&2
  exit 2
fi
mkdir -p "$work"
cp "$root"/tests/deploy/{package.json,package-lock.json,check-k8s.mjs,lws.d.ts} "$work/"
if ! cmp -s "$work/package-lock.json" "$work/node_modules/.installed-lock" 2>/dev/null; then
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$work/package-lock.json" "$work/node_modules/.installed-lock"
fi
version="$(sed -n 's/^project(dsv3_serve VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")"
check=(node "$work/check-k8s.mjs" --version "$version")

"${check[@]}" "$root/deploy"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
planted=0
while IFS='|' read -r file expression expected; do
  [[ -z "$file" || "$file" == \#* ]] && continue
  rm -rf "$tmp/k8s" && cp -r "$root/deploy/k8s" "$tmp/k8s"
  sed -i "$expression" "$tmp/k8s/$file"
  if cmp -s "$root/deploy/k8s/$file" "$tmp/k8s/$file"; then
    echo "check-k8s: mutation '$expression' changes nothing in $file (update mutations.txt)" >&2
    exit 1
  fi
  if out="$("${check[@]}" "$tmp/k8s" 2>&1)"; then
    echo "check-k8s: planted '$expression' in $file and the check passed" >&2
    exit 1
  fi
  if [[ "$out" != *"$expected"* ]]; then
    echo "check-k8s: planted '$expression' in $file; expected '$expected', got:" >&2
    echo "$out" >&2
    exit 1
  fi
  planted=$((planted + 1))
done < "$root/tests/deploy/mutations.txt"
echo "check-k8s: all $planted planted defects caught"
