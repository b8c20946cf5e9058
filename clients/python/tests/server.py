"""Runs a real dsv3-server (the embedded demo model, CPU) for the tests of this folder.

DSV3_SERVER names the binary (ctest sets it); the default is the repository's build tree.
"""
import os
import pathlib
import socket
import subprocess
import tempfile
import time

import grpc

from dsv3_serve import Client

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """dsv3-server with extra flags; address is where it listens once start() returned."""

    def __init__(self, *flags: str, api_key: str = None):
        self.binary = os.environ.get("DSV3_SERVER", str(ROOT / "build/server/dsv3-server"))
        self.flags = flags
        self.api_key = api_key  # what the readiness poll sends when the flags enable keys
        self.log = tempfile.TemporaryFile("w+")
        self.process = None
        self.address = None

    def start(self, timeout_s: float = 120) -> "Server":
        for _ in range(3):  # another test may take the free port before the server binds it
            self.address = f"127.0.0.1:{_free_port()}"
            self.process = subprocess.Popen(
                [self.binary, "--listen", self.address, "--metrics-listen", "",
                 "--device", "cpu", "--threads", "2", *self.flags],
                stdout=self.log, stderr=self.log)
            if self._wait_serving(timeout_s):
                return self
            if "cannot listen" not in self.output():
                break
        self.stop()
        raise RuntimeError(f"dsv3-server did not start:\n{self.output()}")

    def _wait_serving(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with Client(self.address, api_key=self.api_key, timeout=2) as client:
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    client.model_info()
                    return True
                except grpc.RpcError:  # UNAVAILABLE while it binds and loads
                    time.sleep(0.2)
        return False

    def output(self) -> str:
        if self.log.closed:
            return self._output
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self.log.closed:
            self._output = self.output()
            self.log.close()
        return self.process.returncode if self.process is not None else 0
