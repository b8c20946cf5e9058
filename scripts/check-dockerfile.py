#!/usr/bin/env python3
"""Checks the Dockerfile against a build tree, without a container engine (CI has none).

    scripts/check-dockerfile.py [BUILD_DIR] [--dockerfile PATH]   (default: build, Dockerfile)

It replays what the image build would do with the files of BUILD_DIR and fails when:
  - the build stage's staging RUN (the one that writes /out) names a file the build does not
    make, or a program its `ninja` line does not build;
  - a COPY --from source is not among the staged files;
  - the model directory given to -DDSV3_DEFAULT_MODEL_DIR is not where the runtime copies it;
  - ENTRYPOINT, CMD or HEALTHCHECK name a program the runtime lacks or a flag its --help lacks;
  - the staged dsv3-server, started with CMD's arguments (ports swapped for free ones), does
    not become healthy by the HEALTHCHECK's own command, or does not drain cleanly;
  - the runtime user is root, or its HOME and cache directory are not created and owned;
  - a shared library the staged programs load comes from a Debian package the runtime stage
    does not install.
"""
import argparse
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Packages debian:bookworm-slim already holds (dpkg and apt depend on them).
BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}

errors = []


def error(message):
    errors.append(message)


def instructions(text):
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        current = ""
    return out


def stages(text):
    """{stage name: [(INSTRUCTION, arguments)]} in order; the last one is the runtime."""
    result, name = {}, None
    for word, rest in instructions(text):
        if word == "FROM":
            m = re.match(r"\S+\s+AS\s+(\S+)", rest, re.I)
            name = m.group(1) if m else f"stage{len(result)}"
            result[name] = []
        elif name is not None:
            result[name].append((word, rest))
    return result


def exec_form(arguments, what):
    """The JSON array of an exec-form CMD/ENTRYPOINT (the shell form would run as sh -c)."""
    try:
        words = json.loads(arguments)
    except ValueError:
        words = None
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        error(f"{what} is not in exec form (a JSON array): {arguments}")
        return []
    return words


def env_of(stage):
    env = {}
    for word, rest in stage:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def help_flags(program):
    r = subprocess.run([str(program), "--help"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        error(f"{program} --help exited {r.returncode}: {r.stderr.strip()}")
    return set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", r.stdout))


def check_flags(words, program, what):
    known = help_flags(program)
    for word in words:
        flag = word.split("=", 1)[0]
        if flag.startswith("--") and flag not in known:
            error(f"{what}: {flag} is not a flag of {program.name} (not in its --help)")


def flag_value(words, flag):
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_build_outputs(build_stage, build_dir, work):
    """Runs the build stage's staging RUN against build_dir; returns the staged /out."""
    cmake = " ".join(r for w, r in build_stage if w == "RUN" and "cmake " in r)
    m = re.search(r"ninja -C build ([^&;]+)", cmake)
    built = set(m.group(1).split()) if m else set()
    if not built:
        error("the build stage has no `ninja -C build TARGETS` line")
    staging = [r for w, r in build_stage if w == "RUN" and "/out" in r]
    if len(staging) != 1:
        error(f"expected one RUN that stages files into /out, found {len(staging)}")
        return None
    for command in re.split(r"&&|;", staging[0]):
        if command.split()[0] not in ("install", "cp", "mkdir"):
            error(f"the staging RUN should only copy files, not run: {command.strip()}")
            return None
    src = work / "src"
    src.mkdir()
    (src / "build").symlink_to(build_dir)
    out = work / "out"
    command = re.sub(r"(?<![\w/])/out\b", str(out), staging[0])
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=src,
                       capture_output=True, text=True)
    if r.returncode != 0:
        error(f"the staging RUN fails against {build_dir}: {r.stderr.strip()}")
        return None
    for program in sorted((out / "bin").glob("*")):
        if program.name not in built:
            error(f"/out/bin/{program.name} is staged but `ninja -C build` does not build it")
    return out


def assemble_runtime(runtime, build_name, out, work):
    """Copies what the runtime's COPY --from lines take from /out into a fake root."""
    root = work / "root"
    for word, rest in runtime:
        if word != "COPY":
            continue
        args = shlex.split(rest)
        source_stage = next((a.split("=", 1)[1] for a in args if a.startswith("--from=")), None)
        paths = [a for a in args if not a.startswith("--")]
        if source_stage is None:
            continue
        if source_stage != build_name:
            error(f"COPY --from={source_stage}: no stage of that name")
            continue
        *sources, dest = paths
        for source in sources:
            if not source.startswith("/out/"):
                error(f"COPY --from={build_name} {source}: only /out is staged")
                continue
            staged = out / source[len("/out/"):]
            if not staged.exists():
                error(f"COPY --from={build_name} {source}: the staging RUN makes no such path")
                continue
            target = root / dest.lstrip("/")
            if staged.is_dir():
                shutil.copytree(staged, target, dirs_exist_ok=True, symlinks=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(staged, target)
    return root


def check_default_model(build_stage, root):
    cmake = " ".join(r for w, r in build_stage if w == "RUN")
    m = re.search(r"-DDSV3_DEFAULT_MODEL_DIR=(\S+)", cmake)
    if not m:
        error("the build stage does not set -DDSV3_DEFAULT_MODEL_DIR (the build tree's demo "
              "model path would be compiled in, and the image lacks the build tree)")
        return
    model = root / m.group(1).lstrip("/")
    for name in ("config.json", "tokenizer.json"):
        if not (model / name).is_file():
            error(f"-DDSV3_DEFAULT_MODEL_DIR={m.group(1)}: the runtime has no {name} there")
    if not list(model.glob("*.safetensors")):
        error(f"-DDSV3_DEFAULT_MODEL_DIR={m.group(1)}: the runtime has no weights there")


def check_user(runtime):
    user = next((r for w, r in reversed(runtime) if w == "USER"), "root")
    uid = user.split(":")[0]
    if uid in ("0", "root"):
        error("the runtime runs as root (no USER, or USER 0)")
        return
    env = env_of(runtime)
    runs = " ".join(r for w, r in runtime if w == "RUN")
    m = re.search(r"useradd\s[^&;]*--uid\s+" + re.escape(uid) + r"\b[^&;]*", runs)
    if not m:
        error(f"USER {user}: no `useradd --uid {uid}` in the runtime stage")
        return
    home = re.search(r"--home-dir\s+(\S+)", m.group(0))
    if "--create-home" not in m.group(0) or not home:
        error(f"useradd --uid {uid} must --create-home with a --home-dir")
        return
    if env.get("HOME") != home.group(1):
        error(f"ENV HOME is {env.get('HOME')!r}, not the user's home {home.group(1)}")
    cache = env.get("XDG_CACHE_HOME")
    if not cache or not cache.startswith(home.group(1) + "/"):
        error(f"ENV XDG_CACHE_HOME {cache!r} is not inside HOME {home.group(1)}")
        return
    if not re.search(r"install -d -o " + re.escape(uid) + r"\b[^&;]*\s" + re.escape(cache) +
                     r"(\s|$)", runs):
        error(f"the cache directory {cache} is not created owned by {uid} "
              f"(`install -d -o {uid} ... {cache}`)")
    cuda_cache = env.get("CUDA_CACHE_PATH", "")
    if not cuda_cache.startswith(cache + "/"):
        error(f"ENV CUDA_CACHE_PATH {cuda_cache!r} is not inside {cache}")


def dependency_closure(packages):
    """The packages and everything they depend on, as far as this machine's dpkg knows them."""
    listing = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Depends},${Pre-Depends}\n"],
                             capture_output=True, text=True).stdout
    depends = {}
    for line in listing.splitlines():
        package, _, deps = line.partition("\t")
        depends[package] = re.findall(r"([a-z0-9][a-z0-9+.-]+)(?::\w+)?(?:\s*\([^)]*\))?", deps)
    seen, todo = set(), list(packages)
    while todo:
        package = todo.pop()
        if package not in seen:
            seen.add(package)
            todo += depends.get(package, [])
    return seen


# CUDA libraries the programs load and the NVIDIA debian12 packages that ship them.
CUDA_PACKAGES = {"libcudart": "cuda-cudart-13-0", "libcublas": "libcublas-13-0",
                 "libcublasLt": "libcublas-13-0", "libnccl": "libnccl2"}


def check_libraries(runtime, root):
    """Every shared library of the staged programs comes from a package the runtime installs
    (or one those depend on, which apt brings along)."""
    runs = " ".join(r for w, r in runtime if w == "RUN")
    named = set(BASE_PACKAGES)
    for m in re.finditer(r"apt-get install ([^&;]+)", runs):
        named |= {w for w in m.group(1).split() if not w.startswith("-")}
    installed = dependency_closure(named)
    loaders = {}  # library path -> programs that load it
    for program in sorted((root / "usr/local/bin").glob("*")):
        ldd = subprocess.run(["ldd", str(program)], capture_output=True, text=True)
        for path in re.findall(r"=> (/\S+)", ldd.stdout):
            loaders.setdefault(path, []).append(program.name)
    # dpkg records a library under /lib or /usr/lib depending on the package (merged /usr).
    candidates = {path: {path, os.path.realpath(path),
                         re.sub(r"^/usr/lib/", "/lib/", os.path.realpath(path))}
                  for path in loaders}
    owned = subprocess.run(["dpkg", "-S", *sorted(set().union(*candidates.values()))],
                           capture_output=True, text=True).stdout
    owner = {}
    for line in owned.splitlines():
        package, _, path = line.partition(": ")
        owner[path.strip()] = package.split(":")[0]
    for path, programs in sorted(loaders.items()):
        package = next((owner[c] for c in candidates[path] if c in owner), None)
        if package is None and path.startswith("/usr/local/cuda"):
            # The CUDA toolkit here is not dpkg's; the runtime gets these from NVIDIA's repo.
            cuda_package = CUDA_PACKAGES.get(os.path.basename(path).split(".so")[0])
            if cuda_package is None:
                error(f"{', '.join(programs)} load {path}, which no known CUDA package provides")
            elif cuda_package not in named:
                error(f"{', '.join(programs)} load {path} from {cuda_package}, which the runtime "
                      f"stage does not install")
            continue
        if package is None:
            error(f"{', '.join(programs)} load {path}, which no Debian package provides")
        elif package not in installed:
            error(f"{', '.join(programs)} load {path} from {package}, which the runtime stage "
                  f"does not install")


def check_default_command(runtime, root):
    """Runs the staged server with CMD's arguments until the HEALTHCHECK command passes."""
    entrypoint = exec_form(next((r for w, r in runtime if w == "ENTRYPOINT"), "[]"), "ENTRYPOINT")
    cmd = exec_form(next((r for w, r in runtime if w == "CMD"), "[]"), "CMD")
    health = next((r for w, r in runtime if w == "HEALTHCHECK"), None)
    if not entrypoint:
        error("no ENTRYPOINT")
        return
    server = root / entrypoint[0].lstrip("/")
    if not os.access(server, os.X_OK):
        error(f"ENTRYPOINT {entrypoint[0]} is not in the runtime")
        return
    check_flags(entrypoint[1:] + cmd, server, "ENTRYPOINT/CMD")
    if health is None or " CMD " not in f" {health} ":
        error("no HEALTHCHECK ... CMD")
        return
    options, _, probe = health.partition("CMD ")
    if "--start-period" not in options:
        error("HEALTHCHECK has no --start-period (a model load would count as failures)")
    probe = exec_form(probe, "HEALTHCHECK CMD")
    if not probe:
        return
    client = root / probe[0].lstrip("/")
    if not os.access(client, os.X_OK):
        error(f"HEALTHCHECK {probe[0]} is not in the runtime")
        return
    check_flags(probe[1:], client, "HEALTHCHECK")
    listen, target = flag_value(entrypoint + cmd, "--listen"), flag_value(probe, "--server")
    if not listen or not target or listen.rsplit(":", 1)[1] != target.rsplit(":", 1)[1]:
        error(f"HEALTHCHECK --server {target} is not the port of CMD's --listen {listen}")
        return
    if errors:
        return  # the run below would fail on the same defect, less clearly

    port, metrics_port = free_port(), free_port()
    args = [server] + entrypoint[1:] + cmd
    for flag, value in (("--listen", f"127.0.0.1:{port}"),
                        ("--metrics-listen", f"127.0.0.1:{metrics_port}")):
        if flag in args:
            args[args.index(flag) + 1] = value
    probe = [client] + [f"127.0.0.1:{port}" if w == target else w for w in probe[1:]]
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([str(a) for a in args], stdout=log, stderr=log)
        healthy, deadline = False, time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if subprocess.run([str(a) for a in probe], capture_output=True).returncode == 0:
                healthy = True
                break
            time.sleep(0.5)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        log.seek(0)
        text = log.read()
    if not healthy:
        error(f"the default command never passed the HEALTHCHECK; its log:\n{text}")
    elif code != 0:
        error(f"the default command exited {code} on SIGTERM; its log:\n{text}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_dir", nargs="?", default=ROOT / "build", type=pathlib.Path)
    parser.add_argument("--dockerfile", default=ROOT / "Dockerfile", type=pathlib.Path)
    args = parser.parse_args()
    build_dir = args.build_dir.resolve()
    if not (build_dir / "server/dsv3-server").is_file():
        print(f"check-dockerfile: no build at {build_dir} (build it first)", file=sys.stderr)
        return 2
    all_stages = stages(args.dockerfile.read_text())
    names = list(all_stages)
    if len(names) < 2:
        error("the Dockerfile needs a build stage and a runtime stage")
    else:
        build_name, runtime = names[0], all_stages[names[-1]]
        with tempfile.TemporaryDirectory() as tmp:
            work = pathlib.Path(tmp)
            out = stage_build_outputs(all_stages[build_name], build_dir, work)
            if out is not None:
                root = assemble_runtime(runtime, build_name, out, work)
                check_default_model(all_stages[build_name], root)
                check_user(runtime)
                check_libraries(runtime, root)
                check_default_command(runtime, root)
    for e in errors:
        print("check-dockerfile:", e, file=sys.stderr)
    if errors:
        return 1
    print("check-dockerfile: staging, COPY sources, flags, user, libraries and the default "
          "command check out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
