"""One task's lifecycle in a run: derive the key, look it up, restore a hit or run a miss, store.

Spec coverage:
* EXEC-007 — :meth:`LocalLifecycle.probe`: key and lookup, no mutex; a hit restored, replayed.
* EXEC-007 — :meth:`LocalLifecycle.execute`: runs a miss (mutex held), classifies, stores.
* CACHE-006, EXEC-021 — a key error fails the task before it spawns, naming the path.
* CACHE-007 — a succeeded record carries its outputs digest, computed once.
* CACHE-018 — only exit 0 is stored; never with ``cache: false``/``--no-cache``; ``--force``.
* CACHE-019..020, SEC-001 — restores are the tiers'; a refused or corrupt entry is a miss.
* CACHE-023, EXEC-017 — a hit replays its recorded bytes like a run, once its restore succeeded.
* EXEC-008, EXEC-009 — an :class:`~.executor.Executor` runs the action; ``classify`` judges it.
* RC-001, RC-008 — a local miss is fetched beyond, restored alike, recorded ``remote-cache``.
* RC-002 — stored results and a probe's local hits go to the tiers to upload in the background.
* RX-001 — a request carries the task's remote policy (run setting and task field combined).
* RX-008 — a remote success's manifest is fetched, restored and backfilled like a remote hit,
  recorded ``remote-exec``.
* EXEC-020 — :class:`~.claims.OutputClaims` is asked before a restore, a spawn and a store.
* SPEC §1 ``lock`` — every write of a task's outputs happens under its task lock (:mod:`.locks`).
Out of scope: ordering, caps, mutexes (:mod:`.scheduler`); tiers, uploads, backfill
(:mod:`hazremote.cache.tiers`); the lookahead (:mod:`.lookahead`); draining uploads (the CLI).
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, TypeVar

from hazremote.cache.manifest import Manifest, OutputRecord
from hazremote.cache.tier import OutputFile
from hazremote.cache.tiers import CacheTiers, Entry, Tier
from hazremote.domain.digest import Digest
from hazremote.domain.model import CommandAction, HashName, RemotePolicy, Task
from hazremote.domain.refs import TaskId
from hazremote.execute.claims import OutputClaims, OutputOverlap
from hazremote.execute.executor import ActionRequest, Executor
from hazremote.execute.locks import NoTaskLocks, TaskLockPort
from hazremote.execute.lookahead import remote_lookahead
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
from hazremote.keys.components import PredecessorStreams
from hazremote.keys.deriver import DerivedKey, KeyDeriver
from hazremote.keys.resolve import InputError

__all__ = [
    "CachePolicy",
    "LifecycleSettings",
    "LocalLifecycle",
    "default_producer",
    "task_remote_policy",
]

_T = TypeVar("_T")
_CHUNK = 1 << 16
_SOURCE = {Tier.LOCAL: RunSource.LOCAL_CACHE, Tier.REMOTE: RunSource.REMOTE_CACHE}


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


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleSettings:
    """What a run fixes for every task.

    Attributes:
        workspace_root: The workspace's absolute root.
        hash_name: The workspace hash function (stream digests).
        spool_dir: The run's spool directory (stream spools, downloads).
        policy: Lookups and stores (CACHE-018).
        grace_period_s: SIGTERM → SIGKILL delay (EXEC-013).
        remote_execute: RX-001: the run's ``remote.execute`` (``never``: every task local).
        remote_platform: ``remote.platform``, under each task's ``platform``.
    """

    workspace_root: Path
    hash_name: HashName
    spool_dir: Path
    policy: CachePolicy
    grace_period_s: float
    remote_execute: RemotePolicy = RemotePolicy.NEVER
    remote_platform: Mapping[str, str] = field(default_factory=dict)


def task_remote_policy(run: RemotePolicy, task: Task) -> RemotePolicy:
    """RX-001: remote only when the run allows it and the task's ``remote`` is not
    ``never``; the task's own ``auto``/``always`` then chooses how."""
    if run is RemotePolicy.NEVER or task.spec.remote is RemotePolicy.NEVER:
        return RemotePolicy.NEVER
    return task.spec.remote or run


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
        settings: LifecycleSettings,
        deriver: KeyDeriver,
        tiers: CacheTiers,
        executor: Executor,
        observer: RunObserver,
        claims: OutputClaims | None = None,
        locks: TaskLockPort | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = settings.workspace_root
        self._hash_name = settings.hash_name
        self._spool_dir = settings.spool_dir
        self._policy = settings.policy
        self._grace = settings.grace_period_s
        self._remote_execute = settings.remote_execute
        self._remote_platform = settings.remote_platform
        #: RX-002: the recorded outputs of this run's succeeded tasks (remote execution only).
        self._outputs_of: dict[TaskId, tuple[OutputRecord, ...]] = {}
        self._deriver = deriver
        self._tiers = tiers
        self._executor = executor
        self._observer = observer
        self._clock = clock
        self._claims = claims if claims is not None else OutputClaims()
        self._locks: TaskLockPort = locks if locks is not None else NoTaskLocks()
        #: Keys whose restore failed in this run: not retried before running the task.
        self._unrestorable: set[Digest] = set()
        self._key_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="haz-keys")
        self._io_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="haz-outputs")
        self._processes = 0  # tasks spawned and not yet finished
        self._key_jobs = 0  # calls outstanding on the key thread
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
        self.warnings.extend(self._tiers.close())

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
        """RC-001: the remote lookahead (:func:`~hazremote.execute.lookahead.remote_lookahead`)
        on this lifecycle's key thread; call before :func:`run_graph`. How many keys were
        looked up remotely."""
        if not self._policy.lookup:
            return 0
        return await remote_lookahead(
            graph=graph,
            run_set=run_set,
            tiers=self._tiers,
            derive=lambda task, preds: self._deriver.derive(task, preds).key,
            on_key_thread=self._on_key_thread,
        )

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
                if manifest is None and self._policy.lookup and task.spec.cache:
                    hit = await self._remote_hit(task, derived, out, err, cancel=cancel)
                    if hit is not None:
                        manifest, source = hit
                if manifest is None:
                    return Miss(task=task.id, state=derived)
                if source is RunSource.LOCAL_CACHE:  # RC-002: offered to the remote
                    await self._tiers.settle(
                        Entry(manifest=manifest, tier=Tier.LOCAL), restored=True, label=str(task.id)
                    )
                self._observer.task_started(task.id, source=source)
                self._replay(task.id, out, err)
            except _OverlapRefused as refused:
                return self._refuse(task.id, refused.overlap, key=refused.key, started=started)
        return self._hit(task, derived, manifest, source=source, started=started)

    def _remember(self, task: TaskId, manifest: Manifest | None) -> None:
        if manifest is not None and self._remote_execute is not RemotePolicy.NEVER:
            self._outputs_of[task] = manifest.outputs

    def _hit(
        self,
        task: Task,
        derived: DerivedKey,
        manifest: Manifest,
        *,
        source: RunSource,
        started: float,
    ) -> Executed:
        self._remember(task.id, manifest)
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
        manifest = self._tiers.lookup_local(derived.key)
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
        manifest = self._tiers.lookup_local(derived.key, again=True)
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
        entry: Entry | None = None,
    ) -> Manifest | None:
        # EXEC-020: claimed before anything is written, so no restore replaces a file another
        # task of this run materialised.
        overlap = self._claims.claim(task.id, (o.path for o in manifest.outputs))
        if overlap is not None:
            raise _OverlapRefused(overlap, derived.key)
        restored = self._tiers.restore(
            entry if entry is not None else Entry(manifest=manifest, tier=Tier.LOCAL),
            workspace_root=self._root,
            output_patterns=task.outputs,
            stdout_sink=partial(_write_all, stdout),
            stderr_sink=partial(_write_all, stderr),
            known_digests=self._deriver.stat_cache,
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
        task: Task,
        derived: DerivedKey,
        stdout: IO[bytes],
        stderr: IO[bytes],
        *,
        cancel: Cancellation,
    ) -> tuple[Manifest, RunSource] | None:
        """RC-001: fetch from beyond the local tier, restore from the download, settle the
        entry (a restored one goes to the backfill, whose imports the run waits for).

        The restore happens under the task's lock; when another run held it, what that run
        stored locally is restored instead, if anything.
        """
        entry = await self._tiers.fetch_remote(derived.key)
        if entry is None:
            return None
        restored: Manifest | None = None
        try:
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
                    partial(self._restore_fetched, task, derived, entry, stdout, stderr)
                )
            finally:
                held.release()
            return None if restored is None else (restored, _SOURCE[entry.tier])
        finally:
            await self._tiers.settle(entry, restored=restored is not None, label=str(task.id))

    def _restore_fetched(
        self, task: Task, derived: DerivedKey, entry: Entry, stdout: IO[bytes], stderr: IO[bytes]
    ) -> Manifest | None:
        # A failed local restore may have left partial streams behind.
        for spool in (stdout, stderr):
            spool.seek(0)
            spool.truncate()
        return self._restore_manifest(task, derived, entry.manifest, stdout, stderr, entry=entry)

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
        """Run a miss (the scheduler holds its mutex) under its task lock, classify, store.

        A succeeded record carries its outputs digest (CACHE-007), computed once: from the
        manifest the store wrote (the bytes a later hit restores), or, for a run not stored
        (``cache: false``, ``--no-cache``, a failed store), from the files its patterns match.
        A hit's comes from its manifest.
        """
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
        started = self._clock()
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
        remote = task_remote_policy(self._remote_execute, task)
        if remote is not RemotePolicy.NEVER:
            request = replace(
                request,
                remote=remote,
                platform={**self._remote_platform, **task.spec.platform},
                predecessor_outputs=tuple(
                    (p.task, self._outputs_of[p.task])
                    for p in derived.components.predecessors
                    if p.task in self._outputs_of
                ),
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
            if executed.manifest_document is not None:
                result = await self._restore_executed(
                    task,
                    derived,
                    executed.manifest_document,
                    spools,
                    started,
                    worker=executed.worker,
                )
                handed_over = True
                return result
            outcome = executed.process
            record = classify(task.id, outcome, key=derived.key, timeout_s=task.spec.timeout_s)
            if executed.worker is not None and isinstance(record, CompletedRecord):
                # a remote failure: its exit code and streams, recorded as remote-exec
                record = replace(record, source=RunSource.REMOTE_EXEC, worker=executed.worker)
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
                    self._remember(task.id, stored)
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

    async def _restore_executed(
        self,
        task: Task,
        derived: DerivedKey,
        document: bytes,
        spools: StreamFiles,
        started: float,
        *,
        worker: str | None,
    ) -> Executed:
        """RX-008: restore what a remote execution published, like a remote cache hit: the
        entry is fetched and verified, its outputs written and its streams spooled from the
        manifest (the live chunks were only shown), then backfilled locally."""
        entry = await self._tiers.fetch_executed(derived.key, document)
        restored: Manifest | None = None
        error = "its result could not be fetched from the remote cache"
        if entry is not None:
            try:
                with spools.stdout.open("wb") as out, spools.stderr.open("wb") as err:
                    restored = await self._on_key_thread(
                        partial(self._restore_fetched, task, derived, entry, out, err)
                    )
                error = "its result could not be restored"
            except _OverlapRefused as refused:
                await self._tiers.settle(entry, restored=False, label=str(task.id))
                return self._refuse(task.id, refused.overlap, key=refused.key, started=started)
            await self._tiers.settle(entry, restored=restored is not None, label=str(task.id))
        duration_ms = int((self._clock() - started) * 1000)
        if restored is None:
            record = CompletedRecord(
                task=task.id,
                state=RunState.FAILED,
                source=RunSource.REMOTE_EXEC,
                key=derived.key,
                duration_ms=duration_ms,
                error=f"ran remotely, but {error}",
                worker=worker,
            )
            return Executed(record=record, streams=spools)
        self._remember(task.id, restored)
        record = CompletedRecord(
            task=task.id,
            state=RunState.SUCCEEDED,
            source=RunSource.REMOTE_EXEC,
            key=derived.key,
            duration_ms=duration_ms,
            exit_code=0,
            stdout_digest=restored.stdout.hash,
            stderr_digest=restored.stderr.hash,
            outputs_digest=restored.outputs_digest(),
            worker=worker,
        )
        outputs = tuple(o.path for o in restored.outputs)
        return Executed(record=record, outputs=outputs, streams=spools)

    async def _store(
        self,
        task: Task,
        derived: DerivedKey,
        spools: StreamFiles,
        outputs: tuple[str, ...],
        duration_ms: int,
    ) -> Manifest | None:
        """Store a success; the manifest of this run's files, or None when the store failed."""
        stored = await self._tiers.store(
            task=task.id,
            key=derived.key,
            components=derived.components,
            stdout=spools.stdout,
            stderr=spools.stderr,
            outputs=[OutputFile(path=p, source=self._root / p[1:]) for p in outputs],
            duration_ms=duration_ms,
        )
        self.warnings.extend(stored.warnings)
        return stored.manifest
