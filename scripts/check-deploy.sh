#!/usr/bin/env bash
# Checks the deployment files: every YAML under deploy/ parses, and every --flag that a manifest
# passes to dsv3-server is one that `dsv3-server --help` lists (a renamed flag would otherwise
# only show up as a crash-looping pod).
#   scripts/check-deploy.sh [path/to/dsv3-server]   (default: build/server/dsv3-server)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
server="${1:-$root/build/server/dsv3-server}"
if [ ! -x "$server" ]; then
  echo "check-deploy: no dsv3-server at $server (build it first)" >&2
  exit 2
fi
help="$("$server" --help)"

python3 - "$root/deploy" "$help" <<'PY'
import pathlib, re, sys
import yaml

deploy, help_text = pathlib.Path(sys.argv[1]), sys.argv[2]
known = set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", help_text))
errors, checked = [], 0

def containers(node):
    """Every container spec anywhere in a manifest (Deployment, LeaderWorkerSet templates...)."""
    if isinstance(node, dict):
        for key in ("containers", "initContainers"):
            for c in node.get(key) or []:
                if isinstance(c, dict):
                    yield c
        for value in node.values():
            yield from containers(value)
    elif isinstance(node, list):
        for value in node:
            yield from containers(value)

files = sorted(p for p in deploy.rglob("*") if p.suffix in (".yaml", ".yml"))
if not files:
    errors.append(f"no YAML files under {deploy}")
for path in files:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        errors.append(f"{path}: does not parse: {e}")
        continue
    for doc in docs:
        if not isinstance(doc, dict):
            errors.append(f"{path}: a document is not a mapping")
            continue
        if "kind" in doc and "apiVersion" not in doc:
            errors.append(f"{path}: {doc['kind']} without apiVersion")
        for c in containers(doc):
            words = [str(w) for w in (c.get("command") or []) + (c.get("args") or [])]
            text = " ".join(words)
            if "dsv3-server" not in text and "dsv3-serve" not in str(c.get("image", "")):
                continue
            # Flags after the program name, whether in args or inside a `sh -c` line.
            for flag in re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", text):
                checked += 1
                if flag not in known:
                    errors.append(f"{path}: container {c.get('name')}: {flag} is not a "
                                  f"dsv3-server flag")

for e in errors:
    print("check-deploy:", e, file=sys.stderr)
if errors:
    sys.exit(1)
print(f"check-deploy: {len(files)} files parse; {checked} flags checked against --help")
PY
