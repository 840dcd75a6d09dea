"""Entry point of ``haz-worker``: parses the command line, wires the agent, runs it.

Usage: ``haz-worker --server grpc://HOST:PORT --slots N --platform pool=large,os=linux
--work-dir DIR --input-cache-size 10GB [--idle-exit 10m] [--id NAME] [--hash blake3]
[--remote-ca FILE --remote-cert FILE --remote-key FILE]``; the token is ``HAZ_WORKER_TOKEN``.

Spec coverage:
* RX-003 — the worker's id, slots and platform properties come from its flags.
* RX-009 — ``--input-cache-size`` bounds the input cache under ``--work-dir``.
* SEC-002 — the token is read from ``HAZ_WORKER_TOKEN``, never from a flag (argv is visible).
* SEC-005 — ``grpcs://`` uses TLS (``--remote-ca``; ``--remote-cert``/``--remote-key`` for mTLS).
* EXEC-021 — a bad flag prints ``haz-worker: error: …`` and exits 2.
Out of scope: the agent's behaviour (:mod:`worker.agent`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from hazremote.cache.codec import BlobCodec
from hazremote.compression import ZSTD_LEVEL
from hazremote.domain.model import HashName, RemoteMode
from hazremote.domain.units import parse_duration, parse_size
from hazremote.errors import UsageError
from hazremote.execute.sandbox import Sandbox
from hazremote.execute.spawn import SubprocessSpawner
from hazremote.remote.action import Platform
from hazremote.remote.channel import aio_channel
from hazremote.remote.settings import RemoteConfig, RemoteTimeouts, RemoteTls, parse_remote_url
from hazremote.remote.transfer import BlobTransfer
from worker.agent import Agent, AgentConfig, GrpcManifestPublisher
from worker.input_cache import InputCache
from worker.session import grpc_sessions

__all__ = ["WorkerOptions", "main", "parse_args"]

ENV_TOKEN = "HAZ_WORKER_TOKEN"
_EXIT_USAGE = 2
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """The parsed command line."""

    config: RemoteConfig
    agent: AgentConfig
    input_cache_bytes: int
    hash_name: HashName


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(prog="haz-worker", description="Run haz remote actions for a haz service.")
    parser.add_argument(
        "--server", required=True, metavar="URL", help="grpc://HOST:PORT or grpcs://"
    )
    parser.add_argument("--slots", required=True, metavar="N", help="actions run at once")
    parser.add_argument("--platform", default="", metavar="NAME=VALUE,...")
    parser.add_argument("--work-dir", required=True, metavar="DIR")
    parser.add_argument("--input-cache-size", required=True, metavar="SIZE", help="e.g. 10GB")
    parser.add_argument("--idle-exit", metavar="DURATION", help="exit after this long idle")
    parser.add_argument("--id", metavar="NAME", help="worker id (default: the host name)")
    parser.add_argument("--hash", default="blake3", choices=[h.value for h in HashName])
    parser.add_argument("--remote-ca", metavar="FILE", help="CA bundle for grpcs://")
    parser.add_argument("--remote-cert", metavar="FILE", help="client certificate (mTLS)")
    parser.add_argument("--remote-key", metavar="FILE", help="client key (mTLS)")
    return parser


def parse_platform(text: str) -> Platform:
    """``pool=large,os=linux`` → :class:`Platform`.

    Raises:
        UsageError: an item without ``=``, an empty or repeated name.
    """
    properties: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise UsageError(f"--platform: expected NAME=VALUE, got {item!r}")
        if name in properties:
            raise UsageError(f"--platform: {name!r} is given twice")
        properties[name] = value
    return Platform.of(properties)


def parse_args(argv: Sequence[str], *, environ: Mapping[str, str]) -> WorkerOptions:
    """The command line as options.

    Raises:
        UsageError: naming the flag at fault.
    """
    args = _parser().parse_args(list(argv))
    target = parse_remote_url(args.server)
    try:
        slots = int(args.slots)
    except ValueError:
        raise UsageError(f"--slots: expected a whole number, got {args.slots!r}") from None
    if slots < 1:
        raise UsageError(f"--slots must be at least 1, got {slots}")
    try:
        cache_bytes = parse_size(args.input_cache_size)
    except ValueError as error:
        raise UsageError(f"--input-cache-size: {error}") from None
    idle_exit_s: float | None = None
    if args.idle_exit is not None:
        try:
            idle_exit_s = parse_duration(args.idle_exit)
        except ValueError as error:
            raise UsageError(f"--idle-exit: {error}") from None
        if idle_exit_s <= 0:
            raise UsageError("--idle-exit must be longer than 0s")
    worker_id = args.id if args.id is not None else socket.gethostname()
    if not worker_id or len(worker_id) > 128 or not set(worker_id) <= _NAME_OK:
        raise UsageError(f"--id: {worker_id!r} is not 1-128 characters of A-Z a-z 0-9 _ . -")
    tls: RemoteTls | None = None
    if args.server.startswith("grpcs://"):
        tls = RemoteTls(
            ca=Path(args.remote_ca) if args.remote_ca else None,
            cert=Path(args.remote_cert) if args.remote_cert else None,
            key=Path(args.remote_key) if args.remote_key else None,
        )
        if (tls.cert is None) != (tls.key is None):
            raise UsageError("--remote-cert and --remote-key go together")
    elif args.remote_ca or args.remote_cert or args.remote_key:
        raise UsageError(
            f"--remote-ca/--remote-cert/--remote-key need a grpcs:// server, not {args.server!r}"
        )
    token = environ.get(ENV_TOKEN) or None
    return WorkerOptions(
        config=RemoteConfig(
            url=args.server,
            target=target,
            mode=RemoteMode.READ_WRITE,
            namespace="main",
            token=token,
            tls=tls,
        ),
        agent=AgentConfig(
            worker_id=worker_id,
            slots=slots,
            platform=parse_platform(args.platform),
            work_dir=Path(args.work_dir).expanduser().absolute(),
            idle_exit_s=idle_exit_s,
        ),
        input_cache_bytes=cache_bytes,
        hash_name=HashName(args.hash),
    )


async def _serve(options: WorkerOptions) -> int:
    config = options.config
    timeouts = RemoteTimeouts()
    channel = aio_channel(
        config, options=[("grpc.keepalive_time_ms", int(timeouts.keepalive_s * 1000))]
    )
    metadata = (("authorization", f"Bearer {config.token}"),) if config.token else ()
    work_dir = options.agent.work_dir
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="haz-worker-files") as files:
        transfer = BlobTransfer(
            lambda: channel,
            hash_name=options.hash_name,
            namespace=config.namespace,
            metadata=metadata,
            timeouts=timeouts,
            files=files,
        )
        cache = InputCache(
            work_dir / "inputs",
            max_bytes=options.input_cache_bytes,
            hash_name=options.hash_name,
            fetch=transfer.download,
        )
        codec = BlobCodec(hash_name=options.hash_name, level=ZSTD_LEVEL)
        agent = Agent(
            config=options.agent,
            sessions=grpc_sessions(lambda: channel, token=config.token),
            sandbox=Sandbox(
                base=work_dir / "sandboxes", inputs=cache, spawner=SubprocessSpawner(), codec=codec
            ),
            cache=cache,
            blobs=transfer,
            manifests=GrpcManifestPublisher(
                lambda: channel, metadata=metadata, timeout_s=timeouts.lookup_s
            ),
            codec=codec,
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, agent.drain)
        loop.add_signal_handler(signal.SIGINT, agent.drain)
        try:
            code = await agent.run()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            loop.remove_signal_handler(signal.SIGINT)
            transfer.close()
            await channel.close()
        print(f"haz-worker: stopped ({agent.stop_reason})", file=sys.stderr)
        return code


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv, environ=os.environ)
        # TLS files are read now, so a missing CA is a usage error, not a reconnect loop.
        if options.config.tls is not None:
            options.config.tls.credentials_bytes()
    except UsageError as error:
        print(f"haz-worker: error: {error}", file=sys.stderr)
        return _EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return asyncio.run(_serve(options))


if __name__ == "__main__":
    raise SystemExit(main())
