"""Wiring: configuration → storage → domain objects → servicers → one ``grpc.aio`` server.

Spec coverage:
* SVC-001 — storage from :func:`~cache_service.storage.factory.open_storage`, run off the loop.
* SVC-004 — health checking, reflection, a Prometheus port, one access event per RPC.
* SVC-005 — on SIGTERM/SIGINT: ``NOT_SERVING``, stop accepting, ``shutdown_grace`` to finish.
* SVC-006 — ``max_message_size`` is gRPC's message limit (``RESOURCE_EXHAUSTED`` beyond).
* SVC-006 — connections: a handshake timeout, idle ones sent away, :func:`connection_bound`.
* EXEC-021 — a failure to bind or to open storage is :class:`ServiceStartError` (exit 1).
* SEC-002, SEC-003 — ``config.tokens`` becomes the interceptor's ``TokenAuthority`` (SIGHUP).
* SEC-005 — TLS only when ``tls_cert``/``tls_key`` are set; ``tls_client_ca`` means mutual TLS.
* RX-003, RX-010 — the in-process execution queue, its lease expiry running with the server,
  the Execution and WorkerSession services behind the access interceptor, their metrics.
* Issue 13 — :func:`run` tunes and trims glibc's heap, and sweeps the disk stores' temp files.
Out of scope: the storage backends (``cache_service.storage``), the RPC logic (servicers).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import resource
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from prometheus_client import CollectorRegistry, start_http_server

from cache_service import __version__
from cache_service.auth import TokenAuthority
from cache_service.cas import BlobLimits, BlobService
from cache_service.config import Address, ServiceConfig, ServiceConfigError
from cache_service.identity import Authenticator, Authorizer, OpenAccess
from cache_service.interceptor import AccessInterceptor
from cache_service.manifests import ManifestService
from cache_service.metrics import SchedulerMetrics, ServiceMetrics
from cache_service.offload import Offload, StreamSlots
from cache_service.scheduling import InProcessExecutionQueue, SchedulingSettings
from cache_service.servicers import (
    CapabilitiesServicer,
    ContentStoreServicer,
    ManifestStoreServicer,
    ServerInfo,
)
from cache_service.servicers.chunk_codec import add_content_store
from cache_service.servicers.execution import ExecutionServicer, WorkerSessionServicer
from cache_service.servicers.stream_bridges import ReadAheadBudget
from cache_service.storage.base import BlobStore, ManifestStore, StorageError
from cache_service.storage.factory import StorageConfig, disk_roots, open_storage
from hazremote.errors import HazError
from hazremote.logs import get_logger
from hazremote.wire.haz.remote.v1 import (
    cache_pb2,
    cache_pb2_grpc,
    execution_pb2,
    execution_pb2_grpc,
)

__all__ = [
    "ExecutionOptions",
    "MallocTrimmer",
    "RunningServer",
    "ServiceStartError",
    "connection_bound",
    "open_configured_storage",
    "raise_open_file_limit",
    "run",
    "serve",
    "server_credentials",
    "tune_malloc",
]

_log = get_logger("cache_service")

#: Fully-qualified names of the cache API services (health and reflection list them).
SERVICE_NAMES = (
    *(
        cache_pb2.DESCRIPTOR.services_by_name[name].full_name
        for name in ("Capabilities", "ContentStore", "ManifestStore")
    ),
    *(
        execution_pb2.DESCRIPTOR.services_by_name[name].full_name
        for name in ("Execution", "WorkerSession")
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionOptions:
    """The execution queue's settings, its clock (tests inject one) and how often due leases
    are expired (``None``: a tenth of the lease duration)."""

    settings: SchedulingSettings = field(default_factory=SchedulingSettings)
    clock: Callable[[], float] = time.monotonic
    expiry_interval_s: float | None = None


class ServiceStartError(HazError):
    """The service could not start (bind failure, storage unreachable): exit 1 (EXEC-021)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningServer:
    """A started server, as :func:`serve` yields it."""

    host: str
    port: int
    metrics_port: int | None
    metrics: ServiceMetrics

    @property
    def address(self) -> str:
        """``HOST:PORT`` with the real port (what the ``listening on`` line shows)."""
        return str(Address(host=self.host, port=self.port))


def open_configured_storage(
    config: ServiceConfig, *, registry: CollectorRegistry | None = None
) -> tuple[BlobStore, ManifestStore]:
    """The composed stores ``config`` names (via the storage factory).

    Raises:
        ValueError: the storage URL or read-cache settings are invalid (a config error).
        ServiceStartError: the storage cannot be reached.
    """
    storage = _storage_config(config)
    try:
        return open_storage(storage, registry=registry)
    except StorageError as exc:
        raise ServiceStartError(f"cannot open storage {config.storage}: {exc}") from exc


def configured_disk_roots(config: ServiceConfig) -> tuple[Path, ...]:
    """The disk store directories of ``config`` (``file://`` storage or the read cache)."""
    return disk_roots(_storage_config(config))


def _storage_config(config: ServiceConfig) -> StorageConfig:
    return StorageConfig(
        url=config.storage,
        s3_endpoint=config.s3_endpoint,
        s3_region=config.s3_region,
        read_cache_dir=config.read_cache_dir,
        read_cache_size=config.read_cache_size,
        read_cache_manifest_ttl=config.read_cache_manifest_ttl,
        fsync=True,
    )


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServiceConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None


def server_credentials(config: ServiceConfig) -> grpc.ServerCredentials | None:
    """SEC-005: TLS credentials from ``config`` (``None``: plaintext).

    Raises:
        ServiceConfigError: a certificate, key or CA file cannot be read.
    """
    if config.tls_cert is None or config.tls_key is None:
        return None
    chain = _read_pem(config.tls_cert, "TLS certificate (--tls-cert)")
    key = _read_pem(config.tls_key, "TLS key (--tls-key)")
    client_ca = (
        None
        if config.tls_client_ca is None
        else _read_pem(config.tls_client_ca, "client CA (--tls-client-ca)")
    )
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


#: Issue 13: a connection without calls this long is sent away (the client reconnects when
#: it needs to), so idle connections do not hold descriptors forever.
CONNECTION_IDLE_S = 300.0
#: Descriptors kept for everything but connections: the listening and metrics sockets, the
#: event loop's and gRPC's own, log files, the storage directory handles.
_FIXED_DESCRIPTORS = 64


def connection_bound(config: ServiceConfig, *, open_files: int) -> int:
    """Issue 13: how many connections may be open at once under an open-file limit of
    ``open_files``: what is left once every stream holds a file and every storage thread
    two (a blob and its directory), never less than half the limit."""
    reserved = (
        _FIXED_DESCRIPTORS + config.limits.max_concurrent_streams + 2 * config.storage_threads
    )
    return max(open_files - reserved, open_files // 2)


def _grpc_options(config: ServiceConfig) -> list[tuple[str, Any]]:
    size = config.limits.max_message_size
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        # Without this, Linux lets a second server bind the same port and steal half the
        # connections; a taken port must be a start failure (EXEC-021).
        ("grpc.so_reuseport", 0),
        # Issue 13: half a preface (or a stalled TLS hello) must not hold a descriptor; the
        # core's own default is two minutes.
        ("grpc.server_handshake_timeout_ms", round(config.handshake_timeout * 1000)),
        ("grpc.max_connection_idle_ms", round(CONNECTION_IDLE_S * 1000)),
        # Over the bound, a new connection is closed at accept: refusing some clients for a
        # handshake timeout beats running out of descriptors (and logging so every second).
        ("grpc.max_allowed_incoming_connections", connection_bound(config, open_files=open_files)),
    ]


def raise_open_file_limit() -> tuple[int, int]:
    """Issue 13: raise the soft open-file limit to the hard one (each connection is a
    descriptor); returns the soft limit before and after (equal if it could not be raised)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # Linux refuses more than fs.nr_open
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = soft
    if target <= soft:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        return soft, soft
    return soft, target


@contextlib.asynccontextmanager
async def serve(
    config: ServiceConfig,
    *,
    storage: tuple[BlobStore, ManifestStore] | None = None,
    authenticator: Authenticator | None = None,
    released: Callable[[], None] | None = None,
    execution: ExecutionOptions | None = None,
) -> AsyncIterator[RunningServer]:
    """Run the cache service for the duration of the ``async with`` block.

    Args:
        config: Listen addresses, storage, limits.
        storage: Stores to use instead of opening ``config.storage`` (tests); the blob store
            must verify writes (wrap a leaf in ``VerifyingBlobStore``).
        authenticator: Who calls (default: ``config.tokens`` as a
            :class:`~cache_service.auth.TokenAuthority`, else open access, every call
            ``anonymous``). One that is also an
            :class:`~cache_service.identity.Authorizer` authorizes every call too; a
            :class:`~cache_service.auth.TokenAuthority` with a file is watched for changes.
        released: Called when a blob stream has given back what it held (:func:`run`
            passes :meth:`MallocTrimmer.request`).
        execution: The execution queue's settings and clock (default: :class:`ExecutionOptions`).

    Raises:
        ServiceStartError: a port cannot be bound or storage cannot be opened.
        ServiceConfigError: the tokens file is invalid, or a TLS file cannot be read (exit 2).
        ValueError: the storage URL or read-cache settings are invalid (a config error).
    """
    if authenticator is None:
        authenticator = (
            OpenAccess() if config.tokens is None else TokenAuthority.open(config.tokens)
        )
    authorizer = authenticator if isinstance(authenticator, Authorizer) else None
    credentials = server_credentials(config)
    metrics = ServiceMetrics()
    blobs, manifests = (
        storage
        if storage is not None
        else open_configured_storage(config, registry=metrics.registry)
    )
    limits = config.limits
    blob_limits = BlobLimits(
        max_blob_size=limits.max_blob_size,
        max_batch_items=limits.max_batch_items,
        max_batch_total_size=limits.max_batch_total_size,
        stream_chunk_size=limits.stream_chunk_size,
    )
    offload = Offload(max_workers=config.storage_threads)
    # Issue 13: a WriteBlob waits for its client between chunks; it does so in a thread of
    # its own (one per stream slot), never in the storage pool the lookups need.
    streams = Offload(max_workers=limits.max_concurrent_streams, name="haz-cache-stream")
    blob_service = BlobService(store=blobs, limits=blob_limits)
    manifest_service = ManifestService(
        manifests=manifests,
        blobs=blobs,
        max_batch_items=limits.max_batch_items,
        on_lookup=metrics.manifest_lookup,
    )
    options = execution or ExecutionOptions()
    queue = InProcessExecutionQueue(
        settings=options.settings,
        clock=options.clock,
        observer=SchedulerMetrics(metrics.registry),
    )
    interceptor = AccessInterceptor(
        metrics=metrics, authenticator=authenticator, authorizer=authorizer
    )
    server = grpc.aio.server(options=_grpc_options(config))
    # Every service registers through the registrar, which wraps each method handler once
    # with the access interceptor (no per-RPC grpc.aio interceptor).
    registrar = interceptor.registrar(server)
    cache_pb2_grpc.add_CapabilitiesServicer_to_server(
        CapabilitiesServicer(
            info=ServerInfo(
                version=__version__,
                max_message_size=limits.max_message_size,
                auth_disabled=isinstance(authenticator, OpenAccess),
            ),
            limits=blob_limits,
            pools=queue.pools,
        ),
        registrar,
    )
    add_content_store(
        ContentStoreServicer(
            blobs=blob_service,
            offload=offload,
            streams=streams,
            slots=StreamSlots(
                limit=limits.max_concurrent_streams,
                per_caller=min(limits.max_streams_per_caller, limits.max_concurrent_streams),
            ),
            read_ahead=ReadAheadBudget.for_chunk_size(limits.stream_chunk_size),
            idle_timeout=config.stream_idle_timeout,
            **({} if released is None else {"released": released}),
        ),
        registrar,
    )
    worker_sessions = WorkerSessionServicer(
        queue=queue, heartbeat_interval_ms=round(options.settings.heartbeat_interval_s * 1000)
    )
    cache_pb2_grpc.add_ManifestStoreServicer_to_server(
        ManifestStoreServicer(
            manifests=manifest_service,
            offload=offload,
            worker_may_publish=worker_sessions.may_publish,
        ),
        registrar,
    )
    execution_pb2_grpc.add_ExecutionServicer_to_server(
        ExecutionServicer(
            queue=queue, manifests=manifest_service, blobs=blob_service, offload=offload
        ),
        registrar,
    )
    execution_pb2_grpc.add_WorkerSessionServicer_to_server(worker_sessions, registrar)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, registrar)
    for name in ("", *SERVICE_NAMES):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    # enable_server_reflection() picks the asyncio servicer only for a grpc.aio.Server
    # instance; the registrar is not one, so register the asyncio servicer directly.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(
            (
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            )
        ),
        registrar,
    )
    try:
        port = (
            server.add_insecure_port(str(config.listen))
            if credentials is None
            else server.add_secure_port(str(config.listen), credentials)
        )
    except RuntimeError as exc:
        port = 0
        reason = str(exc)
    else:
        reason = "address in use or not available"
    if port == 0:
        offload.shutdown()
        streams.shutdown()
        raise ServiceStartError(f"cannot listen on {config.listen}: {reason}")
    await server.start()
    httpd = None
    watcher = (
        asyncio.create_task(authenticator.watch())
        if isinstance(authenticator, TokenAuthority)
        else None
    )
    expiry = asyncio.create_task(queue.run_expiry(interval_s=options.expiry_interval_s))
    try:
        metrics_port = None
        if config.metrics_listen is not None:
            try:
                httpd, _thread = start_http_server(
                    config.metrics_listen.port,
                    addr=config.metrics_listen.host,
                    registry=metrics.registry,
                )
            except OSError as exc:
                raise ServiceStartError(
                    f"cannot serve metrics on {config.metrics_listen}: {exc.strerror}"
                ) from exc
            metrics_port = int(httpd.server_port)
        yield RunningServer(
            host=config.listen.host, port=port, metrics_port=metrics_port, metrics=metrics
        )
    finally:
        for task in (watcher, expiry):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await health.enter_graceful_shutdown()
        await server.stop(config.shutdown_grace)
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        offload.shutdown()
        streams.shutdown()


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`tune_malloc` sets: blob
#: streams allocate and free several 1 MiB buffers per MiB (messages, chunks, frames); with
#: glibc's defaults many of those are fresh mmaps or trimmed heap, so every page faults in
#: again (~220 page faults per MiB). Served from the heap and not trimmed below 32 MiB, they
#: are reused: WriteBlob ~+20 % on the 2-core bench, peak RSS unchanged (issue 5).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_SETTINGS = ((_M_MMAP_THRESHOLD, 4 << 20), (_M_TRIM_THRESHOLD, 32 << 20))


def tune_malloc() -> bool:
    """Apply :data:`MALLOC_SETTINGS` to glibc's allocator; False where there is no glibc
    ``mallopt`` (e.g. musl, macOS) or it refuses a setting."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS)


#: Issue 13: after a blob stream ends, freed heap is given back this much later (streams
#: ending together are one trim), and in any case this often (other calls free memory too).
TRIM_DELAY_S, TRIM_PERIOD_S = 1.0, 30.0


class MallocTrimmer:
    """Issue 13: gives freed heap back to the OS with glibc's ``malloc_trim(0)``, in a thread
    of its own, :data:`TRIM_DELAY_S` after :meth:`request` and every :data:`TRIM_PERIOD_S`.

    Blob streams free megabytes at once in the storage threads' arenas, which glibc keeps
    (the trim threshold only applies to the top of the main heap): 64 cancelled ReadBlob
    streams left ~300 MiB resident without it, ~80 MiB with it."""

    def __init__(self, trim: Callable[[], object]) -> None:
        self._trim = trim
        self._wanted = threading.Event()
        threading.Thread(target=self._run, name="haz-malloc-trim", daemon=True).start()

    @classmethod
    def start(cls) -> MallocTrimmer | None:
        """A trimmer of this process's glibc heap; None without glibc ``malloc_trim``."""
        try:
            malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            return None
        malloc_trim.argtypes = (ctypes.c_size_t,)
        malloc_trim.restype = ctypes.c_int
        return cls(lambda: malloc_trim(0))

    def request(self) -> None:
        """Trim soon (any thread; cheap)."""
        self._wanted.set()

    def _run(self) -> None:
        while True:
            if self._wanted.wait(timeout=TRIM_PERIOD_S):
                time.sleep(TRIM_DELAY_S)
            self._wanted.clear()
            self._trim()


def _sweep_temp_files(config: ServiceConfig) -> None:
    """Issue 13: remove what SIGKILLed writes left (never a write in flight: see
    :func:`cache_service.storage.disk.remove_stale_temp_files`)."""
    from cache_service.housekeeping import sweep_temp_files

    try:
        swept = sweep_temp_files(
            configured_disk_roots(config), grace=config.temp_grace, now=time.time()
        )
    except Exception as exc:  # housekeeping must never take the server down
        _log.warning("could not remove stale temp files", error=str(exc))
        return
    _log.info("removed stale temp files", files=swept.files, bytes=swept.bytes)


async def run(config: ServiceConfig) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (SVC-005); returns 0."""
    tune_malloc()
    soft_was, soft = raise_open_file_limit()
    if soft != soft_was:
        _log.info("raised the open-file limit", soft_was=soft_was, soft=soft)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    authority = None if config.tokens is None else TokenAuthority.open(config.tokens)
    if authority is not None:
        loop.add_signal_handler(signal.SIGHUP, authority.reload)
    trimmer = MallocTrimmer.start()
    released = None if trimmer is None else trimmer.request
    async with serve(config, authenticator=authority, released=released) as server:
        if authority is None:
            _log.warning(
                "no tokens file: the service is open to every caller (anonymous read-write)"
            )
        print(f"listening on {server.address}", file=sys.stderr, flush=True)
        _log.info(
            "serving",
            address=server.address,
            storage=config.storage,
            metrics_port=server.metrics_port,
            version=__version__,
            tls=config.tls_cert is not None,
            mutual_tls=config.tls_client_ca is not None,
            tokens=None if config.tokens is None else str(config.tokens),
            max_connections=connection_bound(config, open_files=soft),
            handshake_timeout_s=config.handshake_timeout,
        )
        # Walking a large store takes a while: never delay readiness for it.
        threading.Thread(
            target=_sweep_temp_files, args=(config,), name="haz-temp-sweep", daemon=True
        ).start()
        await stopping.wait()
        _log.info("shutting down", grace_s=config.shutdown_grace)
    return 0
