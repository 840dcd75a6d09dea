"""Running blocking storage work off the event loop (the storage ports are synchronous).

Spec coverage:
* SVC-001 — backends are blocking (file I/O, boto3); every storage call of an RPC runs in a
  bounded thread pool so one slow S3 request never stalls the other RPCs.
* SVC-006 — :class:`StreamSlots` bounds the concurrent blob streams with a clear status.
Out of scope: what the work is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cache_service.errors import LimitExceededError

__all__ = ["Offload", "StreamSlots"]

_T = TypeVar("_T")


class Offload:
    """Runs blocking callables in a dedicated thread pool."""

    def __init__(self, *, max_workers: int) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="haz-cache-storage"
        )

    async def __call__(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        # Threads blocked on a dead client's stream end by their own idle timeout.
        self._executor.shutdown(wait=False, cancel_futures=True)


class StreamSlots:
    """SVC-006: at most ``limit`` ReadBlob/WriteBlob streams at once (one event loop)."""

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._used = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Take a slot for the duration of a stream.

        Raises:
            LimitExceededError: every slot is taken.
        """
        if self._used >= self._limit:
            raise LimitExceededError(
                f"{self._used} blob streams in progress; the limit is {self._limit}"
            )
        self._used += 1
        try:
            yield
        finally:
            self._used -= 1
