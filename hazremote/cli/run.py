"""``haz run``: run tasks, restoring what the cache already has.

Spec coverage:
* EXEC-001 — :func:`select_run_set`: targets or the defaults, ``--all``, ``--workspace``.
* EXEC-004 — ``-j N`` overrides ``concurrency.default`` (``auto`` = CPU count).
* EXEC-012..015 — SIGINT/SIGTERM cancel, a second kills at once; each says what happens.
* EXEC-021 — exit 0/1/2/128+n; after a non-zero run :func:`exit_reasons` says why on stderr.
* EXEC-016, EXEC-040 — ``--output live|buffered``; progress on stderr; colour and ``NO_COLOR``.
* DAG-016 — the graph's warnings about the run's tasks are printed once, before it.
* EXEC-020 — one :class:`~hazremote.execute.claims.OutputClaims` per run, shared by all tasks.
* EXEC-026..029 — git filters (:mod:`hazremote.cli.changes`).
* EXEC-030 — ``--dry-run[=json]`` (:mod:`hazremote.execute.predict`), ``remote hit`` included.
* EXEC-041 — ``--summary-json FILE`` whenever a run started.
* CACHE-018 — ``--force`` and ``--no-cache``.
* SPEC §1 ``lock`` — :func:`workspace_lock` for ``lock: true``; else task locks only.
* RC-001 — ``--remote``, ``--remote-mode``, ``--remote-namespace`` (:func:`remote_config`).
* RC-001 — one remote client per run, created only when needed (no gRPC import otherwise).
* RC-002 — the end of a run waits for pending uploads (bounded, with a progress line).
* RC-003 — the remote's one warning joins the run's warnings.
* SEC-005 — ``grpcs://`` remotes use TLS; ``--remote-ca`` (``HAZ_REMOTE_CA``, ``remote.tls``).
* RX-001 — ``--remote-exec``/``--remote-jobs`` (:func:`remote_execution`); with a policy
  other than ``never`` misses go through a :class:`~hazremote.remote.execution.RemoteExecutor`
  and the scheduler admits ``-j`` + remote jobs (local processes stay at ``-j``).
Out of scope: ``haz run --sandbox``; the worker id in summary JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from hazremote.cli.changes import affected_tasks, changed_paths
from hazremote.cli.context import (
    WorkspaceContext,
    open_workspace,
    print_warnings,
    resolve_targets,
)
from hazremote.cli.session import open_cache, open_index
from hazremote.domain.model import OutputMode
from hazremote.domain.refs import RefKind, TaskId, TaskRef
from hazremote.domain.units import format_duration
from hazremote.errors import ReferenceError_, UsageError
from hazremote.execute.claims import OutputOverlap
from hazremote.execute.records import RunState, SkipCause, TaskRecord, summary_json
from hazremote.logs import get_logger
from hazremote.remote.settings import (
    RemoteConfig,
    RemoteExecution,
    RemoteFlags,
    resolve_remote,
    resolve_remote_execution,
)

if TYPE_CHECKING:
    from hazremote.execute.observers import StreamFiles
    from hazremote.execute.scheduler import Cancellation

__all__ = ["exit_reasons", "run", "select_run_set"]

#: How many failed tasks the closing line names before it says "+N more".
_NAMED_FAILURES = 5


def exit_reasons(
    records: Sequence[TaskRecord],
    *,
    violation: SkipCause | None,
    overlap: OutputOverlap | None,
    signum: int | None,
) -> list[str]:
    """Why a run exits non-zero (EXEC-021), one line each; empty for a successful run."""
    lines: list[str] = []
    if signum is not None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        lines.append(f"interrupted by {name}")
    if overlap is not None:
        lines.append(f"the run stopped: {overlap.describe()}")
    elif violation is not None:
        lines.append(f"the run stopped: {violation.value}")
    failed = sorted(r.task for r in records if r.state is RunState.FAILED)
    if failed:
        named = ", ".join(str(t) for t in failed[:_NAMED_FAILURES])
        more = len(failed) - _NAMED_FAILURES
        plural = "s" if len(failed) != 1 else ""
        lines.append(
            f"{len(failed)} task{plural} failed: {named}" + (f" +{more} more" if more > 0 else "")
        )
    return lines


def select_run_set(context: WorkspaceContext, args: argparse.Namespace) -> tuple[TaskId, ...]:
    """EXEC-001 and EXEC-026..029: the tasks this invocation runs."""
    graph = context.graph
    git_mode = ("changed" if args.git_changed else "staged" if args.git_staged else None) or (
        "since" if args.git_changed_since else None
    )
    if git_mode is not None and args.targets:
        raise UsageError("git filters combine with --all/--workspace, not with targets")
    if args.targets:
        try:
            roots = resolve_targets(context, args.targets)
        except ReferenceError_ as error:
            formats = [t for t in args.targets if t in ("plain", "json")]
            if args.dry_run and formats:  # `--dry-run json`: the format needs the `=`
                raise UsageError(
                    f"{error}; for JSON output write --dry-run={formats[0]}"
                ) from error
            raise
    elif args.workspace:
        roots = tuple(graph.tasks)
    elif args.all or git_mode is not None:
        roots = context.bearing_tasks()
    else:
        bearing = context.bearing.name if context.bearing is not None else None
        ref = TaskRef(RefKind.SAME if bearing else RefKind.ALL, "default")
        try:
            roots = graph.resolve(ref, bearing=bearing)
        except ReferenceError_ as error:
            scopes = (
                f"--all (every task of project '{bearing}', which contains this directory) "
                "or --workspace (every task of the workspace)"
                if bearing
                else "--all or --workspace (every task of the workspace: no project contains "
                "this directory)"
            )
            raise UsageError(
                f"no targets given and no `default` task to run ({error}); "
                f"name targets (`haz run build`, `haz run PROJECT:build`), or use {scopes}"
            ) from error
    if git_mode is not None:
        changed = changed_paths(context.root, mode=git_mode, since=args.git_changed_since)
        # EXEC-029: what the change affects anywhere, then the scope restricts it: a task of
        # the scope depending on a changed task of another project is affected too.
        scope = set(roots)
        roots = tuple(t for t in affected_tasks(graph, graph.tasks, changed) if t in scope)
    return graph.run_set(roots)


@contextlib.contextmanager
def workspace_lock(context: WorkspaceContext) -> Iterator[None]:
    """SPEC §1 ``lock: true``: one ``haz run`` at a time per workspace; a second one waits."""
    if not context.workspace.settings.lock:
        yield
        return
    path = context.root / ".haz" / "lock"
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            from hazremote.execute.locks import describe_other_runs

            other = describe_other_runs(context.root / ".haz" / "locks")
            print(f"haz: waiting for {other} in this workspace (lock: true)…", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _jobs(context: WorkspaceContext, args: argparse.Namespace) -> int:
    if args.jobs is not None:
        if args.jobs < 1:
            raise UsageError(f"-j must be at least 1, got {args.jobs}")
        return int(args.jobs)
    configured = context.workspace.settings.concurrency.default
    return configured if configured is not None else (os.cpu_count() or 1)


def _exit_code(records: Sequence[TaskRecord], *, violation: bool, signum: int | None) -> int:
    if signum is not None:
        return 128 + signum
    failed = any(r.state is RunState.FAILED for r in records)
    return 1 if failed or violation else 0


def remote_config(context: WorkspaceContext, args: argparse.Namespace) -> RemoteConfig | None:
    """SPEC §5: the remote cache of this invocation (flag > environment > config)."""
    flags = RemoteFlags(
        url=getattr(args, "remote", None),
        mode=getattr(args, "remote_mode", None),
        namespace=getattr(args, "remote_namespace", None),
        ca=getattr(args, "remote_ca", None),
    )
    return resolve_remote(
        flags, environ=os.environ, config=context.workspace.settings.remote, root=context.root
    )


def remote_execution(
    context: WorkspaceContext, args: argparse.Namespace, remote: RemoteConfig | None
) -> RemoteExecution:
    """RX-001: where this invocation's misses run (flag > environment > config)."""
    return resolve_remote_execution(
        getattr(args, "remote_exec", None),
        remote_jobs=getattr(args, "remote_jobs", None),
        environ=os.environ,
        config=context.workspace.settings.remote,
        remote=remote,
    )


def _dry_run(
    context: WorkspaceContext,
    run_set: tuple[TaskId, ...],
    args: argparse.Namespace,
    remote: RemoteConfig | None,
) -> int:
    from hazremote.execute.predict import predict
    from hazremote.keys.deriver import KeyDeriver

    cache = open_cache(context.workspace)
    settings = context.workspace.settings
    with contextlib.ExitStack() as stack:
        remote_lookup = None
        if remote is not None:
            from hazremote.keys.framing import CHAPTER_REVISION
            from hazremote.remote.client import RemoteCache, SyncRemoteLookup

            config = remote
            sync = stack.enter_context(
                SyncRemoteLookup(
                    lambda: RemoteCache(
                        config, hash_name=settings.cache.hash, chapter_revision=CHAPTER_REVISION
                    )
                )
            )
            remote_lookup = sync.lookup
        deriver = stack.enter_context(
            KeyDeriver.open(
                workspace_root=context.root, hash_name=settings.cache.hash, host_env=os.environ
            )
        )
        predictions = predict(
            graph=context.graph,
            run_set=run_set,
            deriver=deriver,
            lookup=cache.lookup,
            use_cache=not (args.force or args.no_cache),
            remote_lookup=remote_lookup,
        )
        if remote is not None:
            warning = sync.warning()
            if warning is not None:
                get_logger("haz.run").warning(warning)
    if args.dry_run == "json":
        json.dump([p.to_json() for p in predictions.values()], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    width = max((len(str(t)) for t in predictions), default=0)
    for task_id, prediction in predictions.items():
        key = prediction.key.hex if prediction.key else "-" * 64
        print(f"{task_id!s:<{width}}  {key}  {prediction.describe()}")
    return 0


def _on_signal(
    signum: int,
    *,
    cancel: Cancellation,
    running: Callable[[], int],
    grace_s: float,
    notice: Callable[[str], None],
) -> None:
    """EXEC-012..015: request cancellation and say at once what happens now.

    Without the message, a task ignoring SIGTERM made the first Ctrl-C look like nothing
    happened for the whole grace period.
    """
    first = not cancel.requested.is_set()
    killing = not first and not cancel.kill_now.is_set()
    cancel.request(signum)
    count = running()
    again = "Ctrl-C" if signum == signal.SIGINT else f"{signal.Signals(signum).name}"
    if first and count:
        notice(
            f"haz: stopping {count} running task(s) (SIGTERM; killing in "
            f"{format_duration(grace_s)}), {again} again to kill now"
        )
    elif first:
        notice(f"haz: stopping (no task is running), {again} again to stop at once")
    elif killing and count:
        notice(f"haz: killing {count} running task(s) now (SIGKILL)")


def _upload_progress(count: int) -> None:
    if count:
        print(f"haz: finishing {count} remote cache upload(s)…", file=sys.stderr, flush=True)


async def _execute(
    context: WorkspaceContext,
    run_set: tuple[TaskId, ...],
    args: argparse.Namespace,
    remote_settings: RemoteConfig | None,
    execution: RemoteExecution,
) -> tuple[list[TaskRecord], int, bool, int | None]:
    from hazremote.cache.backfill import ProcessBackfill
    from hazremote.cache.tiers import TieredCache
    from hazremote.domain.model import RemotePolicy
    from hazremote.execute.claims import OutputClaims
    from hazremote.execute.executor import Executor, LimitedExecutor, LocalExecutor
    from hazremote.execute.lifecycle import (
        CachePolicy,
        LifecycleSettings,
        LocalLifecycle,
        default_producer,
    )
    from hazremote.execute.locks import TaskLocks
    from hazremote.execute.progress import color_enabled, console_observer
    from hazremote.execute.scheduler import Cancellation, SchedulingLimits, run_graph
    from hazremote.execute.spawn import SubprocessSpawner
    from hazremote.keys.deriver import KeyDeriver
    from hazremote.keys.resolve import unmatched_warnings

    log = get_logger("haz.run")
    settings = context.workspace.settings
    mode = OutputMode(args.output) if args.output else settings.output
    interactive = sys.stderr.isatty()
    observer = console_observer(
        mode=mode,
        interactive=interactive,
        color=color_enabled(is_tty=interactive, environ=os.environ),
    )
    cancel = Cancellation()
    loop = asyncio.get_running_loop()
    tmp_root = context.root / ".haz" / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    spool_dir = Path(tempfile.mkdtemp(prefix="run-", dir=tmp_root))
    deriver = KeyDeriver.open(
        workspace_root=context.root, hash_name=settings.cache.hash, host_env=os.environ
    )
    remote = None
    if remote_settings is not None:
        from hazremote.keys.framing import CHAPTER_REVISION
        from hazremote.remote.known import KnownRemoteKeys, known_keys_path
        from hazremote.remote.lazy import LazyRemote

        known = KnownRemoteKeys(
            known_keys_path(
                context.root, url=remote_settings.url, namespace=remote_settings.namespace
            )
        )
        remote = LazyRemote(
            remote_settings,
            hash_name=settings.cache.hash,
            chapter_revision=CHAPTER_REVISION,
            known=known,
        )
    jobs = _jobs(context, args)
    executor: Executor = LocalExecutor(SubprocessSpawner())
    session = None
    exec_warnings: list[str] = []
    if execution.policy is not RemotePolicy.NEVER and remote_settings is not None:
        from hazremote.remote.action import Platform
        from hazremote.remote.execution import RemoteExecutor
        from hazremote.remote.grpc_execution import RemoteExecutionSession

        session = RemoteExecutionSession(remote_settings, hash_name=settings.cache.hash)
        remote_jobs = execution.remote_jobs or await session.free_slots() or jobs
        executor = RemoteExecutor(
            client=session.client,
            uploader=session.uploader,
            local=LimitedExecutor(executor, limit=jobs),
            namespace=remote_settings.namespace,
            platform_of=lambda request: Platform.of(request.platform),
            warn=exec_warnings.append,
            notice=lambda task, text: observer.notice(f"{task}: {text}"),
            remote_jobs=remote_jobs,
        )
        jobs += remote_jobs
    cache = open_cache(context.workspace)
    locks = TaskLocks(context.root / ".haz" / "locks", notify=observer.notice)
    lifecycle = LocalLifecycle(
        settings=LifecycleSettings(
            workspace_root=context.root,
            hash_name=settings.cache.hash,
            spool_dir=spool_dir,
            policy=CachePolicy(lookup=not (args.force or args.no_cache), store=not args.no_cache),
            grace_period_s=settings.execution.grace_period_s,
            remote_execute=execution.policy,
            remote_platform=execution.platform,
        ),
        deriver=deriver,
        tiers=TieredCache(
            local=cache,
            index=open_index(context.workspace),
            remote=remote,
            backfill=ProcessBackfill(cache.options, log_dir=spool_dir),
            spool_dir=spool_dir,
            producer=default_producer(),
        ),
        executor=executor,
        observer=observer,
        claims=OutputClaims(peers=context.graph.output_peers),
        locks=locks,
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(
            signum,
            partial(
                _on_signal,
                cancel=cancel,
                running=lambda: lifecycle.running,
                grace_s=settings.execution.grace_period_s,
                notice=observer.notice,
            ),
            signum,
        )

    class Events:
        def task_started(self, task: TaskId) -> None:
            del task  # the lifecycle announces a task once its source is known

        def task_finished(self, record: TaskRecord, *, streams: StreamFiles | None = None) -> None:
            observer.task_finished(record, streams=streams)

    started = time.monotonic()
    observer.run_started(total=len(run_set))
    try:
        await loop.run_in_executor(
            None, deriver.prefetch, [context.graph.tasks[t] for t in run_set]
        )
        # RC-001: the remote lookahead runs beside the scheduler: restores start with the
        # first level's answers, and a probe whose key is being looked up waits for that.
        lookahead = asyncio.ensure_future(lifecycle.prefetch_remote(context.graph, run_set))
        try:
            outcome = await run_graph(
                graph=context.graph,
                run_set=run_set,
                lifecycle=lifecycle,
                events=Events(),
                limits=SchedulingLimits(jobs=jobs, tag_caps=dict(settings.concurrency.tags)),
                cancel=cancel,
            )
        finally:
            lookahead.cancel()  # done by now unless the run ended early
            with contextlib.suppress(asyncio.CancelledError):
                await lookahead
        if remote is not None and not cancel.requested.is_set():
            # RC-002: pending uploads finish before the run ends, bounded by a timeout.
            await remote.drain(progress=_upload_progress)
    finally:
        if remote is not None:
            await remote.close()
        if session is not None:
            await session.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        lifecycle.close()
        locks.close()
        deriver.save()
        deriver.close()
        shutil.rmtree(spool_dir, ignore_errors=True)
    records = list(outcome.records.values())
    warnings = [*exec_warnings, *lifecycle.warnings]
    # PATH: inputs that contributed nothing, once per task and pattern (not per dependant)
    warnings += unmatched_warnings(
        deriver.unmatched_inputs(),
        tasks=context.graph.tasks,
        producers=context.graph.producers,
    )
    if remote is not None and (remote_warning := remote.warning()) is not None:
        warnings.append(remote_warning)  # RC-003: one warning for every remote error of a run
    for warning in warnings:
        log.warning(warning)
    observer.run_finished(records=records, duration_s=time.monotonic() - started)
    for reason in exit_reasons(
        records, violation=outcome.violation, overlap=outcome.overlap, signum=cancel.signal
    ):
        print(f"haz: {reason}", file=sys.stderr)
    return records, outcome.duration_ms, outcome.violation is not None, cancel.signal


def run(args: argparse.Namespace) -> int:
    context = open_workspace(args, snapshot=True)
    run_set = select_run_set(context, args)
    print_warnings(context.graph.warnings_for(run_set))
    remote = remote_config(context, args)
    execution = remote_execution(context, args, remote)
    if args.dry_run:
        return _dry_run(context, run_set, args, remote)
    with workspace_lock(context):
        records, duration_ms, violation, signum = asyncio.run(
            _execute(context, run_set, args, remote, execution)
        )
    code = _exit_code(records, violation=violation, signum=signum)
    if args.summary_json:
        document = summary_json(exit_code=code, duration_ms=duration_ms, records=records)
        Path(args.summary_json).write_text(json.dumps(document, indent=2) + "\n")
    return code
