"""One task's lifecycle against the local machine: key, lookup, restore or run, store.

Spec coverage:
* EXEC-007 — :meth:`LocalLifecycle.probe` derives the key and looks it up without any mutex;
  a hit restores the outputs and replays the streams; :meth:`LocalLifecycle.execute` runs a
  miss (the scheduler holds its mutex), classifies it, and stores a success.
* CACHE-006/EXEC-021 — a key error (missing literal input …) fails the task before it spawns,
  with the message naming the path; dependants are then ``upstream-errored``.
* CACHE-007 — predecessor digests come from the scheduler; each succeeded record carries its
  outputs digest, computed once: a hit's from its manifest, a stored run's from the manifest
  the store wrote (the same bytes a later hit restores), a run that was not stored (``cache:
  false``, ``--no-cache``, a failed store) from the files its output patterns match.
* CACHE-018 — only exit 0 is stored; never with ``cache: false`` or ``--no-cache``;
  ``--force`` skips lookups but stores.
* CACHE-019/020, SEC-001 — restore is the cache tier's, which refuses hostile entries; a
  refused or corrupt entry is a miss and the task runs.
* CACHE-023, EXEC-017 — a hit replays the recorded bytes through the same observer path as a
  fresh run, after the restore succeeded (never a half-replayed stream).
* EXEC-008/009 — the :class:`~hazremote.execute.executor.Executor` runs the action;
  :func:`~hazremote.execute.records.classify` maps its outcome to a record.
* RC-001 — with a :class:`RemoteTier`, a local miss is looked up remotely; a remote hit is
  downloaded (verified), restored from the download by the same rules as a local hit
  (SEC-001, CACHE-019), recorded as ``remote-cache`` (RC-008), and handed to the
  :class:`Backfill`, which imports it into the local cache off the critical path. Any remote
  trouble is a miss and the task runs (RC-003).
* RC-002 — in ``read-write`` mode a stored result is handed to the remote tier for a
  background upload after the local store; dependants are released without waiting for it.
  Local hits are shared too (:meth:`RemoteTier.share`: the lookahead's, level by level, and
  any a probe finds beyond them), so turning on a remote in a warm checkout fills it.
* EXEC-020 — the run's :class:`~hazremote.execute.claims.OutputClaims` are consulted before a
  hit's restore writes anything (its manifest's paths), before a miss is spawned (its output
  patterns against the paths its ``output_peers`` hold) and before a fresh result is stored
  (its collected outputs). A refusal fails the task — never spawned or restored, ``error``
  naming both tasks and the path — and hands the overlap to the scheduler, which stops
  admission.
* SPEC §1 ``lock`` (concurrent runs) — every write of a task's outputs happens under its
  task lock (:mod:`.locks`): a restore (local or remote hit) and a run + store. A run finding
  the lock held waits for the other run, then looks the key up locally again before it
  restores or runs (the other run has usually stored it: a hit, the task runs once). The
  lock is never held while waiting for anything else (no mutex, slot or other lock), so two
  runs cannot deadlock.
Out of scope: ordering, caps and mutexes (:mod:`.scheduler`); the remote protocol, its
warnings and the end-of-run drain of uploads (:mod:`hazremote.remote.client`, the CLI).
"""

from __future__ import annotations

import asyncio
import getpass
import itertools
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import IO, Protocol, TypeVar

from hazremote.cache.index import TaskIndex
from hazremote.cache.local import FetchedBlob, LocalCache, StoredBlob
from hazremote.cache.manifest import Manifest
from hazremote.cache.tier import OutputFile, StoreStatus
from hazremote.domain.digest import Digest
from hazremote.domain.model import CommandAction, HashName, Task
from hazremote.domain.refs import TaskId
from hazremote.execute.claims import OutputClaims, OutputOverlap
from hazremote.execute.executor import ActionRequest, Executor
from hazremote.execute.locks import NoTaskLocks, TaskLockPort
from hazremote.execute.observers import RunObserver, StreamFiles
from hazremote.execute.outputs import materialised_outputs
from hazremote.execute.records import (
    CancelledRecord,
    CompletedRecord,
    RunSource,
    RunState,
    classify,
)
from hazremote.execute.scheduler import Cancellation, Executed, Miss, ProbeResult
from hazremote.graph import TaskGraph
from hazremote.keys.components import EnvSource, PredecessorStreams
from hazremote.keys.deriver import DerivedKey, KeyDeriver
from hazremote.keys.fs import OsFilesystem
from hazremote.keys.resolve import InputError

__all__ = ["CachePolicy", "LocalLifecycle", "RemoteTier", "default_producer"]

_T = TypeVar("_T")
_CHUNK = 1 << 16
#: The run spool's directory of downloaded remote blobs (shared by every hit of the run).
_REMOTE_BLOBS = "remote-blobs"


class _OverlapRefused(Exception):
    """A restore refused before it started (EXEC-020); carried out of the key thread."""

    def __init__(self, overlap: OutputOverlap, key: Digest) -> None:
        super().__init__(overlap.describe())
        self.overlap = overlap
        self.key = key


class _Busy:
    """A probe found an entry to restore, but another run holds the task's lock."""


_BUSY = _Busy()


@dataclass(frozen=True, slots=True, kw_only=True)
class CachePolicy:
    """CACHE-018: ``--force`` → lookup False; ``--no-cache`` → both False."""

    lookup: bool = True
    store: bool = True


class RemoteTier(Protocol):
    """The remote cache as the lifecycle uses it (RC-001/002); every trouble is a value.

    Its coroutines run on the run's event loop; :class:`hazremote.remote.client.RemoteCache`
    implements it.
    """

    @property
    def writes(self) -> bool:
        """True in ``read-write`` mode."""
        ...

    async def lookup(self, key: Digest) -> Manifest | None:
        """The strictly parsed remote manifest of ``key``, or ``None`` (miss or error)."""
        ...

    async def prefetch(self, keys: Sequence[Digest]) -> Mapping[Digest, Manifest]:
        """Look ``keys`` up in batches now, so that later lookups need no round trip."""
        ...

    def prefetch_blobs(self, manifests: Sequence[Manifest], dest: Path) -> None:
        """Start fetching the blobs of ``manifests`` into ``dest`` in the background."""
        ...

    async def download(self, manifest: Manifest, dest: Path) -> Mapping[Digest, FetchedBlob] | None:
        """Every blob of ``manifest``, verified (in memory or as files in ``dest``);
        ``None`` on any failure."""
        ...

    def take_document(self, key: Digest) -> bytes | None:
        """The remote hit's manifest document as received (once), or ``None``."""
        ...

    def upload_later(self, *, manifest: Manifest, blobs: Sequence[StoredBlob]) -> None:
        """Upload a local entry in the background."""
        ...

    def share(
        self, manifests: Sequence[Manifest], blobs: Callable[[Manifest], Sequence[StoredBlob]]
    ) -> None:
        """In the background, upload those of these local entries the remote lacks (a no-op
        in ``read-only`` mode and for keys known to be there)."""
        ...


class Backfill(Protocol):
    """RC-001: turns restored remote hits into local entries, off the critical path
    (:class:`hazremote.cache.backfill.ProcessBackfill`)."""

    def start(self) -> None:
        """Get ready now: remote hits are coming."""
        ...

    def submit(
        self,
        *,
        label: str,
        manifest: Manifest,
        blobs: Mapping[Digest, FetchedBlob],
        cleanup: Path | None,
        document: bytes | None = None,
    ) -> None:
        """Import ``manifest`` (whose received ``document`` it may pass on as it is) with
        its fetched ``blobs``; remove ``cleanup`` afterwards."""
        ...

    def close(self) -> list[str]:
        """Wait for every import; the warnings."""
        ...


def default_producer() -> str:
    """``user@host``: who stored a local entry (the server sets its own for remote ones)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _write_all(spool: IO[bytes], data: bytes) -> None:
    spool.write(data)


def _argv(task: Task) -> tuple[str, ...]:
    action = task.action
    if isinstance(action, CommandAction):
        return action.argv
    return (action.shell, "-c", action.script)


class LocalLifecycle:
    """Implements :class:`~hazremote.execute.scheduler.TaskLifecycle` for local runs.

    Key derivation runs on one dedicated thread (the deriver parallelises hashing itself and
    keeps per-run memos); cache I/O runs on a small pool; observer calls happen on the event
    loop thread only, so observers need no locking.
    """

    def __init__(
        self,
        *,
        workspace_root: Path,
        hash_name: HashName,
        deriver: KeyDeriver,
        cache: LocalCache,
        index: TaskIndex | None,
        executor: Executor,
        observer: RunObserver,
        spool_dir: Path,
        policy: CachePolicy,
        grace_period_s: float,
        producer: str,
        clock: Callable[[], float] = time.monotonic,
        remote: RemoteTier | None = None,
        backfill: Backfill,
        claims: OutputClaims | None = None,
        locks: TaskLockPort | None = None,
    ) -> None:
        self._root = workspace_root
        self._hash_name = hash_name
        self._deriver = deriver
        self._cache = cache
        self._index = index
        self._executor = executor
        self._observer = observer
        self._spool_dir = spool_dir
        self._policy = policy
        self._grace = grace_period_s
        self._producer = producer
        self._clock = clock
        self._remote = remote
        self._backfill = backfill
        self._claims = claims if claims is not None else OutputClaims()
        self._locks: TaskLockPort = locks if locks is not None else NoTaskLocks()
        #: Keys whose restore failed in this run: not retried before running the task.
        self._unrestorable: set[Digest] = set()
        self._root_str = str(workspace_root).rstrip("/")
        self._fs = OsFilesystem()
        self._key_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="haz-keys")
        self._io_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="haz-cache")
        self._processes = 0  # tasks spawned and not yet finished
        self._key_jobs = 0  # calls outstanding on the key thread
        #: Local lookups done by :meth:`prefetch_remote` (the manifest, or ``None`` for a
        #: miss), each handed to its probe once.
        self._looked_up: dict[Digest, Manifest | None] = {}
        self._hits = itertools.count()  # names the spool directories of remote hits
        self.warnings: list[str] = []
        #: Entries whose restore was refused, summarised as one warning by :meth:`close`.
        self._refused_entries: list[str] = []

    def _refuse(
        self, task: TaskId, overlap: OutputOverlap, *, key: Digest, started: float
    ) -> Executed:
        """EXEC-020: the task fails without restoring or spawning anything."""
        record = CompletedRecord(
            task=task,
            state=RunState.FAILED,
            source=None,
            key=key,
            duration_ms=int((self._clock() - started) * 1000),
            error=overlap.describe(),
        )
        return Executed(record=record, overlap=overlap)

    @property
    def running(self) -> int:
        """Tasks whose process runs now (for the Ctrl-C message)."""
        return self._processes

    def close(self) -> None:
        self._key_thread.shutdown(wait=True)
        self._io_pool.shutdown(wait=True)
        if self._refused_entries:
            # RC-003: one warning per episode (a lying remote may refuse every entry of a run)
            first, more = self._refused_entries[0], len(self._refused_entries) - 1
            self.warnings.append(first + (f" (+{more} more entries not restored)" if more else ""))
            self._refused_entries.clear()
        self.warnings.extend(self._backfill.close())

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    async def _on_key_thread(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` where the deriver lives: its thread, or inline when that cannot hurt.

        When no process is running and the key thread is idle, nothing waits on the event
        loop, so ``fn`` runs inline: a fully cached replay then pays no thread hand-off per
        task. Otherwise it goes to the key thread, keeping the loop free to drain pipes.
        """
        if self._processes == 0 and self._key_jobs == 0:
            return fn()
        self._key_jobs += 1
        try:
            return await self._on(self._key_thread, fn)
        finally:
            self._key_jobs -= 1

    def release(self, executed: Executed) -> None:
        """The scheduler reported ``executed``: its spooled streams are no longer read."""
        if executed.streams is not None:
            for path in (executed.streams.stdout, executed.streams.stderr):
                path.unlink(missing_ok=True)

    # -- remote lookahead -------------------------------------------------------------------------
    async def prefetch_remote(self, graph: TaskGraph, run_set: Sequence[TaskId]) -> int:
        """RC-001: batch the remote lookups of a run up front, level by level.

        The scheduler admits at most ``-j`` probes at a time, so lookups coalesced at probe
        time come in batches of a few keys. Here the keys of every task whose hard
        predecessors are predicted to hit (locally or remotely) are derived — the deriver's
        memo makes the probes' own derivations cheap — and looked up in one
        ``BatchGetManifests`` per graph level; a remote hit's recorded stream digests make the
        next level's keys known (CACHE-007). The blobs of each level's hits start downloading
        in the background at once, in shared batches. A wrong prediction (a hit that fails
        to restore) only costs a lookup the probe repeats. Call before :func:`run_graph`.

        Returns:
            How many keys were looked up remotely.
        """
        remote = self._remote
        if remote is None or not self._policy.lookup:
            return 0
        resolved: dict[TaskId, PredecessorStreams] = {}
        asked = 0
        # Hard predecessors not yet resolved, per task of the run: a task joins the level
        # after the one that resolved its last predecessor (counted, not rescanned per level).
        waiting = {t: len(graph.hard.get(t, ())) for t in run_set}
        level = sorted(t for t, count in waiting.items() if count == 0)
        while level:
            derived = await self._on_key_thread(partial(self._derive_level, graph, level, resolved))
            if remote.writes:  # RC-002: local hits the remote lacks are uploaded
                local_hits = [local for _, local in derived.values() if local is not None]
                if local_hits:
                    remote.share(local_hits, self._cache.stored_blobs)
            wanted = [key for key, local in derived.values() if local is None]
            asked += len(wanted)
            if wanted:
                # Remote hits are likely: the backfill process starts while they are looked
                # up, so its start-up (~0.1 s) is not waited for at the end of a short run.
                self._backfill.start()
            hits = await remote.prefetch(wanted) if wanted else {}
            if hits:
                blobs_dir = self._spool_dir / _REMOTE_BLOBS
                blobs_dir.mkdir(exist_ok=True)
                remote.prefetch_blobs(list(hits.values()), blobs_dir)
            ready: list[TaskId] = []
            for task_id, (key, local) in derived.items():
                manifest = local or hits.get(key)
                if manifest is None:
                    continue
                resolved[task_id] = PredecessorStreams(
                    task=task_id,
                    stdout=manifest.stdout.hash,
                    stderr=manifest.stderr.hash,
                    outputs=manifest.outputs_digest(),
                )
                for dependant in graph.hard_dependants(task_id):
                    if dependant in waiting:
                        waiting[dependant] -= 1
                        if waiting[dependant] == 0:
                            ready.append(dependant)
            level = sorted(ready)
        return asked

    def _derive_level(
        self,
        graph: TaskGraph,
        level: Sequence[TaskId],
        resolved: Mapping[TaskId, PredecessorStreams],
    ) -> dict[TaskId, tuple[Digest, Manifest | None]]:
        """Keys of ``level`` (cacheable tasks whose inputs resolve) and their local manifests."""
        derived: dict[TaskId, tuple[Digest, Manifest | None]] = {}
        for task_id in level:
            task = graph.tasks[task_id]
            if not task.spec.cache:
                continue
            preds = [resolved[p] for p in graph.hard.get(task_id, ())]
            try:
                key = self._deriver.derive(task, preds).key
            except InputError:
                continue
            manifest = self._cache.lookup(key).manifest
            self._looked_up[key] = manifest  # the probe needs no second lookup or parse
            derived[task_id] = (key, manifest)
        return derived

    # -- probe: key, lookup, restore ------------------------------------------------------------
    async def probe(
        self, task: Task, predecessors: tuple[PredecessorStreams, ...], cancel: Cancellation
    ) -> ProbeResult[DerivedKey]:
        started = self._clock()
        spools = str(self._spool_dir)  # typeshed wants a str here
        with (
            tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+b", dir=spools) as out,
            tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+b", dir=spools) as err,
        ):
            try:
                # One hop to the key thread does everything a probe needs; the event loop only
                # renders. (Three hops per task used to dominate a fully cached replay.)
                found = await self._on_key_thread(
                    partial(self._probe_sync, task, predecessors, out, err)
                )
                if isinstance(found, InputError):
                    record = CompletedRecord(
                        task=task.id,
                        state=RunState.FAILED,
                        source=None,
                        key=None,
                        duration_ms=int((self._clock() - started) * 1000),
                        error=str(found),
                    )
                    return Executed(record=record)
                derived, restored = found
                if isinstance(restored, _Busy):
                    # Another run restores or runs this task now: wait, then look again.
                    restored = await self._restore_contended(task, derived, out, err, cancel)
                manifest = restored
                source = RunSource.LOCAL_CACHE
                if (
                    manifest is None
                    and self._remote is not None
                    and self._policy.lookup
                    and task.spec.cache
                ):
                    hit = await self._remote_hit(
                        self._remote, task, derived, out, err, cancel=cancel
                    )
                    if hit is not None:
                        manifest, source = hit
                if manifest is None:
                    return Miss(task=task.id, state=derived)
                if (
                    source is RunSource.LOCAL_CACHE
                    and self._remote is not None
                    and self._remote.writes
                ):
                    self._remote.share([manifest], self._cache.stored_blobs)  # once per key
                self._observer.task_started(task.id, source=source)
                self._replay(task.id, out, err)
            except _OverlapRefused as refused:
                return self._refuse(task.id, refused.overlap, key=refused.key, started=started)
        return self._hit(task, derived, manifest, source=source, started=started)

    def _hit(
        self,
        task: Task,
        derived: DerivedKey,
        manifest: Manifest,
        *,
        source: RunSource,
        started: float,
    ) -> Executed:
        record = CompletedRecord(
            task=task.id,
            state=RunState.SUCCEEDED,
            source=source,
            key=derived.key,
            duration_ms=int((self._clock() - started) * 1000),
            stdout_digest=manifest.stdout.hash,
            stderr_digest=manifest.stderr.hash,
            outputs_digest=manifest.outputs_digest(),
        )
        return Executed(record=record, outputs=tuple(o.path for o in manifest.outputs))

    async def _hit_under_lock(self, task: Task, derived: DerivedKey) -> Executed | None:
        """A miss about to run, its lock held: another run may have stored it meanwhile."""
        started = self._clock()
        spools = str(self._spool_dir)
        with (
            tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+b", dir=spools) as out,
            tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+b", dir=spools) as err,
        ):
            manifest = await self._on_key_thread(
                partial(self._restore_again, task, derived, out, err)
            )
            if manifest is None:
                return None
            self._observer.task_started(task.id, source=RunSource.LOCAL_CACHE)
            self._replay(task.id, out, err)
        return self._hit(task, derived, manifest, source=RunSource.LOCAL_CACHE, started=started)

    def _probe_sync(
        self,
        task: Task,
        predecessors: tuple[PredecessorStreams, ...],
        stdout: IO[bytes],
        stderr: IO[bytes],
    ) -> tuple[DerivedKey, Manifest | _Busy | None] | InputError:
        """Derive, look up, restore (on the key thread). A manifest means "restored"."""
        try:
            derived = self._deriver.derive(task, predecessors)
        except InputError as error:
            return error
        if not (self._policy.lookup and task.spec.cache):
            return derived, None
        return derived, self._restore_sync(task, derived, stdout, stderr)

    def _restore_sync(
        self, task: Task, derived: DerivedKey, stdout: IO[bytes], stderr: IO[bytes]
    ) -> Manifest | _Busy | None:
        """Look up locally and restore (on the key thread); the manifest means "restored".

        What the remote lookahead found is used as it was found: if a hit's entry vanished
        meanwhile, the restore fails (every blob is verified) and the task runs; an entry
        that appeared after a miss (another run stored it) is not seen, and the remote tier
        is asked instead. :data:`_BUSY` when another run holds the task's lock (never
        waited for here: this thread serves every probe).
        """
        if derived.key in self._looked_up:
            manifest = self._looked_up.pop(derived.key)
        else:
            manifest = self._cache.lookup(derived.key).manifest
        if manifest is None:
            return None
        held = self._locks.try_claim(task.id)
        if held is None:
            return _BUSY
        try:
            return self._restore_manifest(task, derived, manifest, stdout, stderr)
        finally:
            held.release()

    def _restore_again(
        self, task: Task, derived: DerivedKey, stdout: IO[bytes], stderr: IO[bytes]
    ) -> Manifest | None:
        """Under the task's lock: look up locally once more and restore a hit (key thread)."""
        manifest = self._cache.lookup(derived.key).manifest
        if manifest is None:
            return None
        for spool in (stdout, stderr):  # an earlier attempt may have left partial streams
            spool.seek(0)
            spool.truncate()
        return self._restore_manifest(task, derived, manifest, stdout, stderr)

    async def _restore_contended(
        self,
        task: Task,
        derived: DerivedKey,
        stdout: IO[bytes],
        stderr: IO[bytes],
        cancel: Cancellation,
    ) -> Manifest | None:
        """Wait for the other run's hold on the task, then restore what is stored now."""
        held = await self._locks.claim(task.id, cancel)
        if held is None:
            return None  # cancelled: a miss the scheduler no longer admits
        try:
            return await self._on_key_thread(
                partial(self._restore_again, task, derived, stdout, stderr)
            )
        finally:
            held.release()

    def _restore_manifest(
        self,
        task: Task,
        derived: DerivedKey,
        manifest: Manifest,
        stdout: IO[bytes],
        stderr: IO[bytes],
        *,
        fetched: Mapping[Digest, FetchedBlob] | None = None,
    ) -> Manifest | None:
        # EXEC-020: claimed before anything is written, so no restore replaces a file another
        # task of this run materialised.
        overlap = self._claims.claim(task.id, (o.path for o in manifest.outputs))
        if overlap is not None:
            raise _OverlapRefused(overlap, derived.key)
        restored = self._cache.restore(
            manifest,
            workspace_root=self._root,
            output_patterns=task.outputs,
            stdout_sink=partial(_write_all, stdout),
            stderr_sink=partial(_write_all, stderr),
            known_digests=self._deriver.stat_cache,
            fetched=fetched,
        )
        if restored.written:
            self._deriver.outputs_written(task.outputs)
        if not restored.ok:
            self._claims.release(task.id)  # nothing restored: the task runs instead
            self._unrestorable.add(derived.key)
            self._refused_entries.append(
                f"{task.id}: cache entry {derived.key.hex[:12]} not restored "
                f"({restored.status.value}: {restored.message}); running the task"
            )
            return None
        return manifest

    async def _remote_hit(
        self,
        remote: RemoteTier,
        task: Task,
        derived: DerivedKey,
        stdout: IO[bytes],
        stderr: IO[bytes],
        *,
        cancel: Cancellation,
    ) -> tuple[Manifest, RunSource] | None:
        """RC-001: look up remotely, restore from the downloaded blobs, hand the entry to
        the backfill (whose imports the run waits for at its end).

        The restore happens under the task's lock; when another run held it, what that run
        stored locally is restored instead, if anything.

        Blob files not prefetched go to a directory of this hit, created only if there are
        any and removed after the backfill.
        """
        manifest = await remote.lookup(derived.key)
        if manifest is None:
            return None
        own_dir = self._spool_dir / f"remote-{next(self._hits)}"
        blobs: Mapping[Digest, FetchedBlob] | None = None
        restored: Manifest | None = None
        try:
            blobs = await remote.download(manifest, own_dir)
            if blobs is None:
                return None
            held = await self._locks.claim(task.id, cancel)
            if held is None:
                return None
            try:
                if held.waited:
                    local = await self._on_key_thread(
                        partial(self._restore_again, task, derived, stdout, stderr)
                    )
                    if local is not None:  # the other run stored it: nothing to backfill
                        return local, RunSource.LOCAL_CACHE
                restored = await self._on_key_thread(
                    partial(
                        self._restore_fetched,
                        task,
                        derived,
                        manifest=manifest,
                        blobs=blobs,
                        stdout=stdout,
                        stderr=stderr,
                    )
                )
            finally:
                held.release()
            return None if restored is None else (restored, RunSource.REMOTE_CACHE)
        finally:
            owns = blobs is None or any(
                isinstance(blob, Path) and blob.parent == own_dir for blob in blobs.values()
            )
            if restored is not None and blobs is not None:
                self._backfill.submit(
                    label=str(task.id),
                    manifest=manifest,
                    blobs=blobs,
                    cleanup=own_dir if owns else None,
                    document=remote.take_document(manifest.key),
                )
            elif owns:
                await self._on(self._io_pool, partial(shutil.rmtree, own_dir, ignore_errors=True))

    def _restore_fetched(
        self,
        task: Task,
        derived: DerivedKey,
        *,
        manifest: Manifest,
        blobs: Mapping[Digest, FetchedBlob],
        stdout: IO[bytes],
        stderr: IO[bytes],
    ) -> Manifest | None:
        # A failed local restore may have left partial streams behind.
        for spool in (stdout, stderr):
            spool.seek(0)
            spool.truncate()
        return self._restore_manifest(task, derived, manifest, stdout, stderr, fetched=blobs)

    def _replay(self, task: TaskId, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        for spool, emit in (
            (stdout, self._observer.task_stdout),
            (stderr, self._observer.task_stderr),
        ):
            spool.seek(0)
            while chunk := spool.read(_CHUNK):
                emit(task, chunk)

    async def _outputs_written(self, task: Task) -> None:
        # Files under these patterns changed: the deriver's per-run memo must forget them
        # before a dependant's key is derived. Runs on the key thread, in order.
        await self._on_key_thread(partial(self._deriver.outputs_written, task.outputs))

    # -- execute: spawn, classify, store ---------------------------------------------------------
    async def execute(self, task: Task, miss: Miss[DerivedKey], cancel: Cancellation) -> Executed:
        derived = miss.state
        started = self._clock()
        held = await self._locks.claim(task.id, cancel)
        if held is None:  # cancelled while another run held the task
            return Executed(record=CancelledRecord(task=task.id, key=derived.key))
        try:
            if self._policy.lookup and task.spec.cache and derived.key not in self._unrestorable:
                try:
                    hit = await self._hit_under_lock(task, derived)
                except _OverlapRefused as refused:
                    return self._refuse(task.id, refused.overlap, key=refused.key, started=started)
                if hit is not None:
                    return hit
            # EXEC-020: a file another task materialised that this task's outputs match would
            # be collected (and stored) as its output: refuse before the process starts.
            conflict = self._claims.conflict_before_spawn(task)
            if conflict is not None:
                return self._refuse(task.id, conflict, key=derived.key, started=started)
            return await self._run_locked(task, derived, cancel)
        finally:
            held.release()

    async def _run_locked(self, task: Task, derived: DerivedKey, cancel: Cancellation) -> Executed:
        self._observer.task_started(task.id, source=RunSource.FRESH)
        token = uuid.uuid4().hex
        spools = StreamFiles(
            stdout=self._spool_dir / f"{token}.stdout", stderr=self._spool_dir / f"{token}.stderr"
        )
        request = ActionRequest(
            task=task.id,
            key=derived.key,
            components=derived.components,
            argv=_argv(task),
            env=self._deriver.process_env(task),
            workspace_root=self._root,
            cwd=self._root / task.project_dir if task.project_dir else self._root,
            outputs=task.outputs,
            streams=spools,
            timeout_s=task.spec.timeout_s,
            grace_period_s=self._grace,
            hash_name=self._hash_name,
        )
        handed_over = False
        try:
            self._processes += 1
            try:
                executed = await self._executor.run(
                    request,
                    on_stdout=partial(self._observer.task_stdout, task.id),
                    on_stderr=partial(self._observer.task_stderr, task.id),
                    cancel=cancel,
                )
            finally:
                self._processes -= 1
            outcome = executed.process
            record = classify(task.id, outcome, key=derived.key, timeout_s=task.spec.timeout_s)
            outputs: tuple[str, ...] = ()
            overlap: OutputOverlap | None = None
            if executed.touched_workspace:
                await self._on(
                    self._key_thread, partial(self._deriver.outputs_written, task.outputs)
                )
            if isinstance(record, CompletedRecord) and record.state is RunState.SUCCEEDED:
                outputs = await self._on(
                    self._io_pool, partial(materialised_outputs, self._root, task.outputs)
                )
                # EXEC-020: another task ran at the same time and got there first; this
                # result holds its file, so it fails and is not stored.
                overlap = self._claims.claim(task.id, outputs)
                if overlap is not None:
                    record = replace(record, state=RunState.FAILED, error=overlap.describe())
                    outputs = ()
                else:
                    stored: Manifest | None = None
                    if self._policy.store and task.spec.cache:
                        stored = await self._store(
                            task, derived, spools, outputs, record.duration_ms
                        )
                    if stored is not None:  # the store hashed every output: no second read
                        digest = stored.outputs_digest()
                    else:
                        digest = await self._on(
                            self._key_thread, partial(self._deriver.outputs_digest, outputs)
                        )
                    record = replace(record, outputs_digest=digest)
            handed_over = True  # removed by release(), once the record is reported
            return Executed(record=record, outputs=outputs, overlap=overlap, streams=spools)
        finally:
            if not handed_over:
                for path in (spools.stdout, spools.stderr):
                    path.unlink(missing_ok=True)

    async def _store(
        self,
        task: Task,
        derived: DerivedKey,
        spools: StreamFiles,
        outputs: tuple[str, ...],
        duration_ms: int,
    ) -> Manifest | None:
        """Store a success; the manifest of this run's files, or None when the store failed."""
        result = await self._on(
            self._io_pool,
            partial(
                self._cache.store,
                key=derived.key,
                components=derived.components,
                stdout=spools.stdout,
                stderr=spools.stderr,
                outputs=[OutputFile(path=p, source=self._root / p[1:]) for p in outputs],
                duration_ms=duration_ms,
                producer=self._producer,
            ),
        )
        if result.status is StoreStatus.FAILED:
            self.warnings.append(f"{task.id}: result not cached: {result.warning}")
            return None
        if self._remote is not None and self._remote.writes:
            entry = result.manifest if result.status is StoreStatus.STORED else None
            if entry is None:  # another run's entry is the one in place: upload that one
                entry = (
                    await self._on(self._io_pool, partial(self._cache.lookup, derived.key))
                ).manifest
            if entry is not None:
                self._remote.upload_later(manifest=entry, blobs=self._cache.stored_blobs(entry))
        if self._index is not None:
            env_values = {
                e.name: (None if e.source is EnvSource.UNSET else e.value)
                for e in derived.components.env
            }
            warning = await self._on(
                self._io_pool,
                partial(self._index.record_task_key, task.id, derived.key, env_values),
            )
            if warning is not None:
                self.warnings.append(warning)
        return result.manifest
