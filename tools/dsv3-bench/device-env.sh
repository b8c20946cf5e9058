# Sourced by the device scripts (device-run.sh, device-ab.sh, ...) from the repository root on
# the device machine: unpacks .device/ (pack-device.sh) into /tmp/dsv3/bin and /tmp/dsv3/lib
# (every time: a warm machine keeps the last call's unpacked files, which may be another
# pack's; outside the working tree, so that a dry run here leaves the tree the size the run
# tool sends), sets LD_LIBRARY_PATH to the packed shared libraries, extracts the fixture
# archives to /tmp/dsv3/fixtures (DSV3_FIXTURES_DIR, tests/test_util.h FixturePath), points
# DSV3_TOOLS_DIR at the packed binaries (ToolPath), and puts the demo model and its held-out ids
# where each packed binary was compiled to look (tests/demo_model.h: paths of the build that
# made it, which may be a worktree's). Sets `bin` and `out` ($OUT, else /tmp/out).
out=${OUT:-/tmp/out}
mkdir -p "$out" /tmp/dsv3
rm -rf /tmp/dsv3/lib /tmp/dsv3/bin
tar xJf .device/lib.tar.xz -C /tmp/dsv3
tar xJf .device/bin.tar.xz -C /tmp/dsv3
export LD_LIBRARY_PATH=/tmp/dsv3/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
bin=/tmp/dsv3/bin
mkdir -p /tmp/dsv3/fixtures
for a in tests/data/fixtures/*.tar.xz; do tar xJf "$a" -C /tmp/dsv3/fixtures; done
export DSV3_FIXTURES_DIR=/tmp/dsv3/fixtures
export DSV3_TOOLS_DIR=$bin
for exe in "$bin"/*; do
  for d in $(grep -aoE '/[A-Za-z0-9_./+-]*/data/demo-model' "$exe" | sort -u); do
    [ -d "$d" ] || { mkdir -p "$d" && tar xJf tools/demo-model/dsv3-demo-fp8.tar.xz -C "$d"; }
  done
  for f in $(grep -aoE '/[A-Za-z0-9_./+-]*/tools/demo-model/heldout_ids.txt' "$exe" | sort -u); do
    [ -e "$f" ] || { mkdir -p "$(dirname "$f")" && cp tools/demo-model/heldout_ids.txt "$f"; }
  done
done
