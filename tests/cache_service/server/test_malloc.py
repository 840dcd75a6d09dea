"""Issue 5: the service tunes glibc's allocator for blob streams (``tune_malloc``)."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

import pytest

from cache_service import app


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_glibc_accepts_the_settings() -> None:
    """Every mallopt setting is accepted (in a fresh process: the tests' allocator stays)."""
    done = subprocess.run(
        [sys.executable, "-c", "from cache_service.app import tune_malloc; print(tune_malloc())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "True"


def test_without_mallopt_nothing_is_tuned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another C library (musl, macOS): no mallopt, the service runs untuned."""

    def no_library(name: object) -> object:
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    assert app.tune_malloc() is False
