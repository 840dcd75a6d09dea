"""The remote cache client: one ``grpc.aio`` channel per run, never a point of failure.

Spec coverage:
* RC-001 — :meth:`RemoteCache.lookup`: ready-together lookups go out as one batch, parsed strictly.
* RC-003 — a manifest refused or unparsable is a miss of its own key only (issue 13).
* RC-002 — :meth:`RemoteCache.upload_later` in the background, :meth:`RemoteCache.drain` at the end.
* RC-002 — :meth:`RemoteCache.share` uploads local hits the remote lacks; ``on_confirmed``.
* RC-003 — every error is a miss or a skipped upload and ONE warning (:meth:`RemoteCache.warning`).
* RC-003 — a :class:`CircuitBreaker` per kind of operation; deadlines on every call; keepalive.
* RC-004 — downloads verified by :class:`~.transfer.BlobTransfer`; its errors are misses.
* RC-005 — blobs are uploaded before the manifest that references them.
* RC-006, RC-007 — blob batches, streams and find-missing: :mod:`hazremote.remote.transfer`.
* SEC-002 — the token travels as metadata ``authorization: Bearer <token>``.
Out of scope: moving blobs (:mod:`.transfer`), remote execution (RX), deciding when to look
up or store (:mod:`hazremote.execute.lifecycle`) and writing entries (:mod:`hazremote.cache.local`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import grpc

from hazremote.cache.codec import (
    FetchedBlob,
)
from hazremote.cache.local import StoredBlob
from hazremote.cache.manifest import Manifest, ManifestError, parse_manifest
from hazremote.domain.digest import Digest
from hazremote.domain.model import HashName
from hazremote.logs import get_logger
from hazremote.remote._wire import (
    hash_function,
)
from hazremote.remote.breaker import CircuitBreaker
from hazremote.remote.channel import aio_channel
from hazremote.remote.settings import RemoteConfig
from hazremote.remote.transfer import (
    DEFAULT_MEMORY_BUDGET,
    MAX_MESSAGE,
    BlobTransfer,
    TransferError,
    TransferStats,
)
from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc

__all__ = ["Operation", "RemoteCache", "RemoteStats", "SyncRemoteLookup", "manifest_blobs"]

_T = TypeVar("_T")
#: The kinds of remote operation, each with its own circuit breaker: one path of a
#: half-broken server (say, lookups that never answer) must open its breaker even while
#: another path (uploads) keeps succeeding.
Operation = Literal["lookup", "download", "upload"]
#: Bytes of blobs prefetched per run at most (they wait on disk until restored).
_PREFETCH_BUDGET = 512 << 20
#: Pending uploads that finish within this long at the end of a run are not announced.
_QUIET_DRAIN_S = 0.25


class _RemoteFailure(Exception):
    """A remote call failed; ``breaker`` says whether it is a sign of an unhealthy remote."""

    def __init__(self, message: str, *, breaker: bool = True) -> None:
        super().__init__(message)
        self.breaker = breaker


@dataclass(slots=True)
class RemoteStats(TransferStats):
    """What this client did (for the epilogue, ``bench/`` and tests); the blob counters are
    the transfer client's (:class:`TransferStats`)."""

    lookups: int = 0
    lookup_batches: int = 0
    hits: int = 0
    errors: int = 0
    refused_by_breaker: int = 0
    uploads: int = 0
    uploads_failed: int = 0
    manifests_put: int = 0
    shares_checked: int = 0


@dataclass(slots=True)
class _Pending:
    key: Digest
    future: asyncio.Future[Manifest | None] = field(repr=False)


def manifest_blobs(manifest: Manifest) -> dict[Digest, int]:
    """The distinct blobs a manifest references: digest → uncompressed size."""
    blobs = {manifest.stdout.hash: manifest.stdout.size, manifest.stderr.hash: manifest.stderr.size}
    for output in manifest.outputs:
        blobs.setdefault(output.hash, output.size)
    return blobs


class RemoteCache:
    """The remote tier of one run. Create, use and close it on one event loop.

    Every public coroutine reports trouble as a value (``None`` / ``False``), never raises
    for a remote problem: RC-003.
    """

    def __init__(
        self,
        config: RemoteConfig,
        *,
        hash_name: HashName,
        chapter_revision: int,
        clock: Callable[[], float] = time.monotonic,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        on_confirmed: Callable[[Iterable[Digest]], None] | None = None,
    ) -> None:
        self._config = config
        self._on_confirmed = on_confirmed
        #: Local entries handed to :meth:`share` (each key once per run), and those queued.
        self._shared: set[Digest] = set()
        self._share_queue: list[tuple[Manifest, Callable[[Manifest], Sequence[StoredBlob]]]] = []
        self._share_handle: asyncio.Handle | None = None
        self._timeouts = config.timeouts
        self._hash_name = hash_name
        self._hash_fn = hash_function(hash_name)
        self._revision = chapter_revision
        self._breakers: dict[Operation, CircuitBreaker] = {
            kind: CircuitBreaker(
                failures=config.timeouts.breaker_failures,
                cooldown_s=config.timeouts.breaker_cooldown_s,
                clock=clock,
            )
            for kind in get_args(Operation)
        }
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {config.token}"),) if config.token else ()
        )
        self._channel: grpc.aio.Channel | None = None
        self._pending: list[_Pending] = []
        #: Answers of :meth:`prefetch`, each handed out once by :meth:`lookup`.
        self._prefetched: dict[Digest, Manifest | None] = {}
        #: The documents of remote hits as the server sent them, until taken.
        self._documents: dict[Digest, bytes] = {}
        #: Keys of prefetches under way → a future done when their answers are in.
        self._inflight: dict[Digest, asyncio.Future[None]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._uploads: set[asyncio.Task[bool]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._blob_futures: dict[Digest, asyncio.Future[FetchedBlob | None]] = {}
        self._prefetch_budget = _PREFETCH_BUDGET
        self._first_error: str | None = None
        self._log = get_logger("haz.remote")
        self.stats = RemoteStats()
        # Verifying, writing and reading blob files happen here, not in asyncio's default
        # pool: its many threads, each wanting the GIL between two system calls, used to
        # spend more time handing it over (futex calls in the tens of thousands per replay)
        # than working. Two threads still overlap zstd and hashing, which release the GIL.
        self._files = ThreadPoolExecutor(max_workers=2, thread_name_prefix="haz-remote-files")
        self._transfer = BlobTransfer(
            self._open,
            hash_name=hash_name,
            namespace=config.namespace,
            metadata=self._metadata,
            timeouts=config.timeouts,
            files=self._files,
            memory_budget=memory_budget,
            stats=self.stats,
        )

    @property
    def config(self) -> RemoteConfig:
        return self._config

    @property
    def writes(self) -> bool:
        """RC-002: True in ``read-write`` mode (``read-only`` never uploads)."""
        return self._config.writes

    def breaker(self, kind: Operation) -> CircuitBreaker:
        """The circuit breaker of one kind of operation (RC-003)."""
        return self._breakers[kind]

    # -- lifetime -----------------------------------------------------------------------------

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            t = self._timeouts
            keepalive_ms = max(1000, int(t.keepalive_s * 1000))
            self._channel = aio_channel(
                self._config,
                options=[
                    ("grpc.keepalive_time_ms", keepalive_ms),
                    ("grpc.keepalive_timeout_ms", max(1000, int(t.lookup_s * 1000))),
                    ("grpc.keepalive_permit_without_calls", 0),
                    ("grpc.http2.max_pings_without_data", 0),
                    ("grpc.max_receive_message_length", MAX_MESSAGE),
                    ("grpc.max_send_message_length", MAX_MESSAGE),
                    # A re-probe after the breaker's cool-down must find a fresh connection
                    # attempt, not the tail of a long reconnect backoff. gRPC also uses
                    # min_reconnect_backoff as the deadline of one connection attempt
                    # (handshake included): it must be the connect deadline, not 200 ms, or
                    # a slow link or a loaded server never connects.
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.min_reconnect_backoff_ms", max(200, int(t.connect_s * 1000))),
                    ("grpc.max_reconnect_backoff_ms", max(200, int(t.breaker_cooldown_s * 500))),
                    ("grpc.enable_retries", 0),
                ],
            )
        return self._channel

    async def close(self) -> None:
        """Cancel what is still pending (call :meth:`drain` first) and close the channel."""
        pending = [*self._uploads, *self._background]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._transfer.close()
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
        self._files.shutdown(wait=True)

    # -- failures and the breaker -------------------------------------------------------------

    def _failed(self, kind: Operation, what: str, error: BaseException) -> None:
        if isinstance(error, grpc.aio.AioRpcError):
            detail = f"{error.code().name}: {error.details() or ''}".rstrip(": ")
            breaker = True
        elif isinstance(error, _RemoteFailure):
            detail, breaker = str(error), error.breaker
        else:
            detail, breaker = f"{type(error).__name__}: {error}", True
        self.stats.errors += 1
        if breaker:
            self._breakers[kind].failure()
        else:
            self._breakers[kind].success()  # it answered (with bad data): it is reachable
        message = f"{what}: {detail}"
        if self._first_error is None:
            self._first_error = message
        self._log.debug("remote.error", what=what, detail=detail, url=self._config.url)

    def warning(self) -> str | None:
        """RC-003: the ONE warning of a run with remote errors (``None`` when all went well)."""
        if self._first_error is None:
            return None
        more = self.stats.errors - 1
        tail = f" (+{more} more remote error(s))" if more > 0 else ""
        openings = sum(b.openings for b in self._breakers.values())
        breaker = f"; circuit breaker opened {openings} time(s)" if openings else ""
        return (
            f"remote cache {self._config.url}: {self._first_error}{tail}{breaker} "
            "(failed lookups were misses and those tasks ran locally; failed uploads were skipped)"
        )

    async def _guarded(
        self, kind: Operation, what: str, call: Callable[[], Coroutine[Any, Any, _T]]
    ) -> _T | None:
        """Run one remote operation through its kind's breaker; ``None`` when refused or
        failed."""
        breaker = self._breakers[kind]
        if not breaker.allow():
            self.stats.refused_by_breaker += 1
            return None
        try:
            result = await call()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._failed(kind, what, error)
            return None
        breaker.success()
        return result

    # -- lookups ------------------------------------------------------------------------------

    async def prefetch(self, keys: Sequence[Digest]) -> dict[Digest, Manifest]:
        """Look up ``keys`` now, in as few batches as the server allows; :meth:`lookup` then
        answers them (hit or miss) without another round trip — a lookup of a key whose
        prefetch is still under way waits for it. Returns the hits.

        A failed prefetch remembers nothing: the later lookups ask again (or meet the breaker).
        """
        wanted = [
            k for k in dict.fromkeys(keys) if k not in self._prefetched and k not in self._inflight
        ]
        if not wanted:
            return {}
        flight: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for key in wanted:
            self._inflight[key] = flight
        found: dict[Digest, Manifest] = {}
        try:
            self.stats.lookups += len(wanted)
            answered = await self._lookup_many(wanted)
            if answered is not None:  # a refused entry is a miss to remember, like any other
                found = answered
                for key in wanted:
                    self._prefetched[key] = found.get(key)
        finally:
            for key in wanted:
                del self._inflight[key]
            flight.set_result(None)
        return found

    async def lookup(self, key: Digest) -> Manifest | None:
        """RC-001: the remote manifest of ``key``, or ``None`` (a miss, or any error).

        Lookups issued within ``coalesce_s`` of each other share one ``BatchGetManifests``.
        """
        flight = self._inflight.get(key)
        if flight is not None:
            await asyncio.shield(flight)
        if key in self._prefetched:
            return self._prefetched.pop(key)
        loop = asyncio.get_running_loop()
        pending = _Pending(key=key, future=loop.create_future())
        self._pending.append(pending)
        if self._flush_handle is None:
            self._flush_handle = loop.call_later(self._timeouts.coalesce_s, self._flush)
        return await pending.future

    def accept_document(self, key: Digest, document: bytes) -> Manifest | None:
        """RX-008: a remote execution's published manifest of ``key``, parsed as strictly
        as a lookup's (``None``, with the run's warning, when refused) and kept for
        :meth:`take_document`."""
        manifest = self._parse(key, document)
        if manifest is not None:
            self._documents[key] = document
        return manifest

    def take_document(self, key: Digest) -> bytes | None:
        """The document of the remote hit of ``key`` as received (once), so the local
        backfill need not serialise the parsed manifest again."""
        return self._documents.pop(key, None)

    def _flush(self) -> None:
        self._flush_handle = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._lookup_batch(batch))
            task.add_done_callback(_ignore_result)

    async def _lookup_batch(self, batch: list[_Pending]) -> None:
        try:
            self.stats.lookups += len(batch)
            keys = list(dict.fromkeys(p.key for p in batch))
            found = await self.lookup_many(keys)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_result(found.get(pending.key))
        finally:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_result(None)

    async def lookup_many(self, keys: Sequence[Digest]) -> dict[Digest, Manifest]:
        """One or more ``BatchGetManifests`` for ``keys``: the hits (a miss is absent)."""
        return await self._lookup_many(keys) or {}

    async def _lookup_many(self, keys: Sequence[Digest]) -> dict[Digest, Manifest] | None:
        """The hits of ``keys``, or ``None`` when the lookup itself failed or was refused
        (an entry the client refuses is only a miss)."""
        if not keys:
            return {}

        async def call() -> dict[Digest, Manifest]:
            hits: dict[Digest, Manifest] = {}
            async for key, result in self._batch_get_manifests(keys):
                if result.found:
                    document = bytes(result.manifest_json)
                    manifest = self._parse(key, document)
                    if manifest is not None:
                        hits[key] = manifest
                        self._documents[key] = document
            return hits

        found = await self._guarded("lookup", "manifest lookup", call)
        if found is None:
            return None
        self.stats.hits += len(found)
        self._confirm(found)
        return found

    def _confirm(self, keys: Iterable[Digest]) -> None:
        if self._on_confirmed is not None:
            self._on_confirmed(keys)

    def _parse(self, key: Digest, data: bytes) -> Manifest | None:
        try:
            manifest = parse_manifest(
                data, chapter_revision=self._revision, hash_name=self._hash_name
            )
        except ManifestError as error:
            self._failed(
                "lookup",
                f"manifest {key.hex[:12]}",
                _RemoteFailure(f"rejected: {error}", breaker=False),
            )
            return None
        except Exception as error:  # the parser met input it cannot handle
            # Hostile or broken bytes (an integer json refuses to convert, say) cost this
            # entry only, never the hits of its batch (RC-003: a miss, one warning).
            self._failed(
                "lookup",
                f"manifest {key.hex[:12]}",
                _RemoteFailure(
                    f"rejected: cannot parse ({type(error).__name__}: {error})", breaker=False
                ),
            )
            return None
        if manifest.key != key:
            self._failed(
                "lookup",
                f"manifest {key.hex[:12]}",
                _RemoteFailure(f"it is for key {manifest.key.hex[:12]}", breaker=False),
            )
            return None
        return manifest

    # -- downloads ----------------------------------------------------------------------------

    async def download(self, manifest: Manifest, dest: Path) -> dict[Digest, FetchedBlob] | None:
        """RC-004/006: every blob of ``manifest``, verified: small ones as bytes in memory
        (within the run's memory budget), the others as files of their uncompressed bytes.

        Blobs requested by :meth:`prefetch_blobs` are awaited there; the others are fetched
        now, their files going to ``dest/<hex>`` (``dest`` created only then, for this call).

        Returns:
            digest → blob, or ``None`` if any blob could not be fetched or did not verify
            (the files written so far stay in ``dest``).
        """
        blobs = manifest_blobs(manifest)
        fetched: dict[Digest, FetchedBlob] = {}
        rest: dict[Digest, int] = {}
        for digest, size in blobs.items():
            future = self._blob_futures.get(digest)
            if future is None:
                rest[digest] = size
                continue
            blob = future.result() if future.done() else await asyncio.shield(future)
            if blob is None:
                return None  # the prefetch failed: its error is already counted
            fetched[digest] = blob
        if rest:
            got = await self._guarded(
                "download",
                f"download of {manifest.key.hex[:12]}",
                partial(self._fetch_blobs, rest, dest),
            )
            if got is None:
                return None
            fetched.update(got)
        return fetched

    def prefetch_blobs(self, manifests: Sequence[Manifest], dest: Path) -> None:
        """Start downloading the blobs of ``manifests`` into ``dest`` in the background.

        The union of their blobs travels in as few batches as the server's limits allow,
        instead of one round trip per task at restore time. At most ``prefetch_budget``
        bytes are prefetched per run (kept until the run ends: in memory within its memory
        budget, the rest as files in ``dest``); what does not fit is fetched by
        :meth:`download` as usual.
        """
        todo: dict[Digest, int] = {}
        for manifest in manifests:
            for digest, size in manifest_blobs(manifest).items():
                if digest in self._blob_futures or digest in todo:
                    continue
                if size > self._prefetch_budget:
                    continue
                self._prefetch_budget -= size
                todo[digest] = size
        if not todo:
            return
        loop = asyncio.get_running_loop()
        futures: dict[Digest, asyncio.Future[FetchedBlob | None]] = {
            digest: loop.create_future() for digest in todo
        }
        self._blob_futures.update(futures)
        task = asyncio.ensure_future(self._prefetch_run(todo, dest, futures))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fetch_blobs(self, blobs: dict[Digest, int], dest: Path) -> dict[Digest, FetchedBlob]:
        return _unwrap(await self._transfer.download(blobs, dest))

    async def _prefetch_run(
        self,
        todo: dict[Digest, int],
        dest: Path,
        futures: dict[Digest, asyncio.Future[FetchedBlob | None]],
    ) -> None:
        got: dict[Digest, FetchedBlob] | None = None
        try:
            got = await self._guarded(
                "download",
                f"download of {len(todo)} blob(s)",
                partial(self._fetch_blobs, todo, dest),
            )
        finally:
            for digest, future in futures.items():
                if not future.done():
                    future.set_result(None if got is None else got.get(digest))

    # -- uploads ------------------------------------------------------------------------------

    def upload_later(self, *, manifest: Manifest, blobs: Sequence[StoredBlob]) -> None:
        """RC-002: upload in the background (never delaying the caller)."""
        task = asyncio.ensure_future(self.upload(manifest=manifest, blobs=blobs))
        self._uploads.add(task)
        task.add_done_callback(self._uploads.discard)

    def share(
        self,
        manifests: Sequence[Manifest],
        blobs: Callable[[Manifest], Sequence[StoredBlob]],
    ) -> None:
        """RC-002: make sure the remote holds these local entries, in the background.

        Entries shared within one event-loop iteration (a level of the lookahead) are asked
        about in one ``BatchGetManifests``; those the remote lacks are uploaded
        (``blobs(manifest)`` lists their local blobs). Each key is handled once per run.
        """
        if not self._config.writes:
            return
        for manifest in manifests:
            if manifest.key not in self._shared:
                self._shared.add(manifest.key)
                self._share_queue.append((manifest, blobs))
        if self._share_queue and self._share_handle is None:
            self._share_handle = asyncio.get_running_loop().call_soon(self._flush_shares)

    def _flush_shares(self) -> None:
        self._share_handle = None
        batch, self._share_queue = self._share_queue, []
        if batch:
            task = asyncio.ensure_future(self._share_batch(batch))
            self._uploads.add(task)  # the end-of-run drain waits for it and its uploads
            task.add_done_callback(self._uploads.discard)

    async def _share_batch(
        self, batch: Sequence[tuple[Manifest, Callable[[Manifest], Sequence[StoredBlob]]]]
    ) -> bool:
        keys = [manifest.key for manifest, _ in batch]
        self.stats.shares_checked += len(keys)
        present = await self._guarded("lookup", "manifest lookup", partial(self._present, keys))
        if present is None:
            return False  # RC-003: counted in the run's warning; nothing uploaded
        self._confirm(present)
        for manifest, blobs in batch:
            if manifest.key not in present:
                self.upload_later(manifest=manifest, blobs=blobs(manifest))
        return True

    async def _present(self, keys: Sequence[Digest]) -> set[Digest]:
        """The keys of ``keys`` the remote has a manifest for (not fetched for use)."""
        return {key async for key, result in self._batch_get_manifests(keys) if result.found}

    async def _batch_get_manifests(
        self, keys: Sequence[Digest]
    ) -> AsyncIterator[tuple[Digest, Any]]:
        """``BatchGetManifests`` of ``keys`` in batches the server accepts: each key with its
        result, in order. A reply of the wrong length is a remote failure."""
        stub = cache_pb2_grpc.ManifestStoreStub(self._open())
        limits = _unwrap(await self._transfer.limits())
        for start in range(0, len(keys), limits.max_batch_items):
            part = keys[start : start + limits.max_batch_items]
            self.stats.lookup_batches += 1
            reply = await stub.BatchGetManifests(
                cache_pb2.BatchGetManifestsRequest(
                    namespace=self._config.namespace,
                    hash_function=self._hash_fn,
                    keys=[k.raw for k in part],
                ),
                timeout=self._timeouts.lookup_s,
                metadata=self._metadata,
            )
            if len(reply.results) != len(part):
                raise _RemoteFailure(
                    f"BatchGetManifests answered {len(reply.results)} results for {len(part)} keys"
                )
            for item in zip(part, reply.results, strict=True):
                yield item

    @property
    def pending_uploads(self) -> int:
        return len(self._uploads)

    async def drain(
        self, *, timeout_s: float | None = None, progress: Callable[[int], None] | None = None
    ) -> int:
        """Wait for background uploads, at most ``timeout_s``; returns how many were cut off.

        ``progress(n)`` is called whenever the number of pending uploads changes.
        """
        limit = self._timeouts.upload_drain_s if timeout_s is None else timeout_s
        deadline = asyncio.get_running_loop().time() + limit
        if self._share_handle is not None:  # shares not sent yet are part of what is pending
            self._share_handle.cancel()
            self._flush_shares()
        if self._uploads:
            # Most runs end with their uploads nearly done: say nothing unless they take a while.
            await asyncio.wait(set(self._uploads), timeout=min(limit, _QUIET_DRAIN_S))
        last = -1
        while self._uploads:
            if progress is not None and len(self._uploads) != last:
                last = len(self._uploads)
                progress(last)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await asyncio.wait(
                set(self._uploads), timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
        cut = len(self._uploads)
        if cut:
            self._failed(
                "upload",
                "upload",
                _RemoteFailure(f"{cut} upload(s) still pending after {limit:g}s", breaker=False),
            )
            for task in list(self._uploads):
                task.cancel()
            await asyncio.gather(*self._uploads, return_exceptions=True)
        if progress is not None and last > 0:
            progress(0)
        return cut

    async def upload(self, *, manifest: Manifest, blobs: Sequence[StoredBlob]) -> bool:
        """RC-005/007: missing blobs first, then the manifest. True when the remote has it."""
        if not self._config.writes:
            return False
        self.stats.uploads += 1

        async def call() -> bool:
            _unwrap(await self._transfer.upload(blobs))
            await self._put_manifest(manifest)
            return True

        done = await self._guarded("upload", f"upload of {manifest.key.hex[:12]}", call)
        if not done:
            self.stats.uploads_failed += 1
        else:
            self._confirm((manifest.key,))
        return bool(done)

    async def _put_manifest(self, manifest: Manifest) -> None:
        stub = cache_pb2_grpc.ManifestStoreStub(self._open())
        try:
            await stub.PutManifest(
                cache_pb2.PutManifestRequest(
                    namespace=self._config.namespace,
                    hash_function=self._hash_fn,
                    key=manifest.key.raw,
                    manifest_json=manifest.to_json(),
                ),
                timeout=self._timeouts.lookup_s,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as error:
            # RC-002: another run stored first; the remote has a result for this key.
            if error.code() is not grpc.StatusCode.ALREADY_EXISTS:
                raise
        self.stats.manifests_put += 1


class SyncRemoteLookup:
    """A blocking ``lookup(key)`` over a :class:`RemoteCache` on a private loop thread.

    For synchronous callers (``haz run --dry-run``). Use as a context manager.
    """

    def __init__(self, factory: Callable[[], RemoteCache]) -> None:
        self._factory = factory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._remote: RemoteCache | None = None

    def __enter__(self) -> SyncRemoteLookup:
        self._thread.start()
        self._remote = self._run(_make(self._factory))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._remote is not None:
            self._run(self._remote.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        future: Future[_T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def lookup(self, key: Digest) -> Manifest | None:
        assert self._remote is not None
        return self._run(self._remote.lookup(key))

    def warning(self) -> str | None:
        return None if self._remote is None else self._remote.warning()


async def _make(factory: Callable[[], RemoteCache]) -> RemoteCache:
    return factory()


def _ignore_result(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        task.result()


def _unwrap(value: _T | TransferError) -> _T:
    """A transfer's result, or its error raised for :meth:`RemoteCache._guarded` (RC-003)."""
    if isinstance(value, TransferError):
        raise _RemoteFailure(value.message, breaker=value.unhealthy)
    return value
