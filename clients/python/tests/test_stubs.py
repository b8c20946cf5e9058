"""The committed stubs (src/dsv3/v1) are what generate-stubs.sh makes from the proto today: a
changed proto without regenerated stubs would send fields the client cannot see."""
import pathlib
import subprocess
import tempfile
import unittest

PACKAGE = pathlib.Path(__file__).resolve().parents[1]


class StubsTest(unittest.TestCase):
    def test_committed_stubs_match_the_proto(self):
        with tempfile.TemporaryDirectory() as out:
            subprocess.run(["bash", str(PACKAGE / "generate-stubs.sh"), out], check=True)
            for name in ("inference_pb2.py", "inference_pb2_grpc.py"):
                fresh = (pathlib.Path(out) / "dsv3/v1" / name).read_text()
                committed = (PACKAGE / "src/dsv3/v1" / name).read_text()
                self.assertEqual(committed, fresh,
                                 f"src/dsv3/v1/{name} is stale: run clients/python/generate-stubs.sh")


if __name__ == "__main__":
    unittest.main()
