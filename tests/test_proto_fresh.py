"""The checked-in generated protobuf code matches ``proto/`` (issue: foundation tooling)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_generated_code_is_not_stale() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_generated_digest_message_round_trips() -> None:
    from hazremote.wire.haz.remote.v1 import digest_pb2

    message = digest_pb2.Digest(hash=bytes(range(32)), size_bytes=7)
    parsed = digest_pb2.Digest.FromString(message.SerializeToString())
    assert parsed.hash == bytes(range(32))
    assert parsed.size_bytes == 7
    assert digest_pb2.HASH_FUNCTION_SHA256 == 1


def test_stale_code_is_detected(tmp_path: Path) -> None:
    """Changing one generated file makes ``--check`` fail: the guard can fail."""
    import shutil

    copy = tmp_path / "wire"
    shutil.copytree(REPO / "hazremote" / "wire", copy)
    target = copy / "haz" / "remote" / "v1" / "digest_pb2.py"
    target.write_text(target.read_text() + "\n# edited by hand\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "proto" / "generate.py"), "--check", "--out", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "digest_pb2.py" in result.stderr
