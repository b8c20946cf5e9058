"""`pip install clients/python` works with nothing but Debian's python3-grpcio and
python3-protobuf: into a venv that sees the system's packages, with no package index."""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import unittest

PACKAGE = pathlib.Path(__file__).resolve().parents[1]


class PackagingTest(unittest.TestCase):
    def test_pip_installs_it_offline_and_it_imports(self):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            # A copy: pip's in-tree build would leave build/ and *.egg-info in the checkout.
            shutil.copytree(PACKAGE, tmp / "src", ignore=shutil.ignore_patterns("tests"))
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages",
                            str(tmp / "venv")], check=True)
            python = tmp / "venv/bin/python"
            # Not the source tree the test itself imports from.
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index",
                            "--no-build-isolation", str(tmp / "src")], check=True, env=env)
            out = subprocess.run(
                [str(python), "-c", "import dsv3_serve, sys; print(dsv3_serve.__file__)"],
                check=True, capture_output=True, text=True, cwd=tmp, env=env).stdout
            self.assertIn(str(tmp / "venv"), out)


if __name__ == "__main__":
    unittest.main()
