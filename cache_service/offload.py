"""Running blocking storage work off the event loop (the storage ports are synchronous).

Spec coverage:
* SVC-001 — every storage call of an RPC runs in a bounded thread pool.
* SVC-006 — :class:`StreamSlots` bounds the concurrent blob streams, in all and per caller.
* SVC-006 — work that waits for a client runs in a pool of its own, never the storage pool.
Out of scope: what the work is; who a caller is (the servicer names it).
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
    """Runs blocking callables in a dedicated thread pool (threads named ``name``)."""

    def __init__(self, *, max_workers: int, name: str = "haz-cache-storage") -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)

    async def __call__(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        # Threads blocked on a dead client's stream end by their own idle timeout.
        self._executor.shutdown(wait=False, cancel_futures=True)


class StreamSlots:
    """SVC-006: at most ``limit`` ReadBlob/WriteBlob streams at once, and at most
    ``per_caller`` of them for one caller (one event loop)."""

    def __init__(self, *, limit: int, per_caller: int) -> None:
        self._limit = limit
        self._per_caller = per_caller
        self._used = 0
        self._by_caller: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, caller: str) -> Iterator[None]:
        """Take a slot for the duration of a stream of ``caller`` (as a message names it,
        e.g. ``token 'ci'``).

        Raises:
            LimitExceededError: every slot is taken, or every slot ``caller`` may take.
        """
        if self._used >= self._limit:
            raise LimitExceededError(
                f"{self._used} blob streams in progress; the limit is {self._limit} "
                "(max_concurrent_streams)"
            )
        held = self._by_caller.get(caller, 0)
        if held >= self._per_caller:
            raise LimitExceededError(
                f"{caller} has {held} blob streams in progress; the per-caller limit is "
                f"{self._per_caller} (max_streams_per_caller)"
            )
        self._used += 1
        self._by_caller[caller] = held + 1
        try:
            yield
        finally:
            self._used -= 1
            left = self._by_caller[caller] - 1
            if left:
                self._by_caller[caller] = left
            else:
                del self._by_caller[caller]
