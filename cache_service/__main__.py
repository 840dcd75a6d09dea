"""Entry point of ``haz-cache-service``: parse the command line, resolve config, serve.

Spec coverage:
* §5 — ``haz-cache-service [serve] [--config FILE] [--listen HOST:PORT] [--storage URL]
  [--s3-endpoint URL] [--s3-region R] [--metrics-listen HOST:PORT] [--read-cache DIR
  --read-cache-size SIZE [--read-cache-manifest-ttl D]]`` plus ``--log-level``,
  ``--log-format`` and the SVC-006 limit flags (``--max-blob-size`` …); no subcommand means
  ``serve``.
* SVC-003 — flag > ``HAZ_CACHE_*`` environment > YAML file > default (:mod:`.config`).
* EXEC-021 — exit 2 on bad configuration or usage, 1 when the service cannot start (port
  taken, storage unreachable), 0 after a graceful shutdown on SIGTERM/SIGINT (SVC-005).
* OPS-003 — ``haz-cache-service gc [--max-age D] [--max-size SIZE] [--dry-run]`` (plus
  ``--blob-grace D``) with the same storage settings; it also removes the temp files of dead
  writes untouched for ``--temp-grace`` (issue 13).
* SEC-006 — ``haz-cache-service admin list-producers | purge --producer NAME
  [--namespace NS]``.
* SEC-002 / SEC-005 — ``--tokens FILE``, ``--tls-cert F --tls-key F [--tls-client-ca F]``; an
  invalid tokens file or unreadable TLS file is exit 2; SIGHUP reloads the tokens file.
Out of scope (a later issue): ``--queue``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from cache_service.config import SETTINGS, ServiceConfig, ServiceConfigError, resolve_config
from cache_service.errors import InvalidRequestError
from cache_service.storage.base import StorageError

__all__ = ["build_parser", "main"]

_HELP = {
    "listen": "address to serve gRPC on (default 127.0.0.1:7070; port 0 picks a free port)",
    "storage": "file:///DIR, DIR or s3://BUCKET/PREFIX (default $XDG_DATA_HOME/haz/store)",
    "s3_endpoint": "S3 endpoint URL (default: AWS, or the standard AWS environment)",
    "s3_region": "S3 region",
    "metrics_listen": "serve Prometheus metrics over HTTP on HOST:PORT",
    "read_cache": "local directory caching S3 reads (LRU; with --read-cache-size)",
    "read_cache_size": "bound of the read cache, e.g. 10GiB",
    "read_cache_manifest_ttl": "with --read-cache: how long a found manifest is served from "
    "memory, the bound on how late another process's purge or replacement is seen "
    "(default 30s; 0: off)",
    "log_level": "debug | info | warning | error (default info)",
    "log_format": "console | json (default json)",
    "shutdown_grace": "time in-flight RPCs get after SIGTERM (default 10s)",
    "stream_idle_timeout": "a WriteBlob client silent this long is dropped with "
    "DEADLINE_EXCEEDED (default 60s)",
    "handshake_timeout": "close a connection that has not completed its HTTP/2 (and TLS) "
    "handshake this long after it was accepted (default 10s)",
    "temp_grace": "remove temp files of dead writes (disk stores) untouched this long, at "
    "start-up and in gc (default 1h, at least 5m)",
    "storage_threads": "threads running blocking storage calls (default 32)",
    "tokens": "tokens file (YAML); without it the service is open to every caller",
    "tls_cert": "PEM certificate chain: serve TLS (with --tls-key)",
    "tls_key": "PEM private key of --tls-cert",
    "tls_client_ca": "PEM CA bundle: require client certificates it signed (mutual TLS)",
    "max_blob_size": "largest blob accepted, uncompressed (default 4GiB)",
    "max_batch_items": "largest number of digests or keys per batch call (default 1000)",
    "max_batch_total_size": "largest uncompressed payload of one batch call (default 4MiB)",
    "max_message_size": "largest gRPC message either way (default 8MiB)",
    "max_concurrent_streams": "most ReadBlob/WriteBlob streams at once (default 256)",
    "max_streams_per_caller": "most blob streams of one token or peer at once (default 64)",
    "stream_chunk_size": "preferred chunk size of blob streams (default 1MiB)",
}
_METAVARS = {
    "listen": "HOST:PORT",
    "metrics_listen": "HOST:PORT",
    "storage": "URL",
    "s3_endpoint": "URL",
    "s3_region": "R",
    "read_cache": "DIR",
    "read_cache_size": "SIZE",
    "read_cache_manifest_ttl": "DURATION",
    "log_level": "LEVEL",
    "log_format": "FORMAT",
    "shutdown_grace": "DURATION",
    "stream_idle_timeout": "DURATION",
    "handshake_timeout": "DURATION",
    "temp_grace": "DURATION",
    "storage_threads": "N",
    "tokens": "FILE",
    "tls_cert": "FILE",
    "tls_key": "FILE",
    "tls_client_ca": "FILE",
    "max_blob_size": "SIZE",
    "max_batch_items": "N",
    "max_batch_total_size": "SIZE",
    "max_message_size": "SIZE",
    "max_concurrent_streams": "N",
    "max_streams_per_caller": "N",
    "stream_chunk_size": "SIZE",
}
_COMMANDS = ("serve", "gc", "admin")


def _add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file")
    for setting in SETTINGS:
        parser.add_argument(
            setting.flag,
            dest=setting.dest,
            metavar=_METAVARS.get(setting.dest, setting.dest.upper()),
            help=f"{_HELP[setting.dest]} [{setting.env}]",
        )


def build_parser(command: str = "serve") -> argparse.ArgumentParser:
    """The parser of one subcommand (``serve``, ``gc`` or ``admin``)."""
    if command == "gc":
        parser = argparse.ArgumentParser(
            prog="haz-cache-service gc",
            description="Bound storage growth: delete manifests older than "
            "--max-age, then the oldest until the store fits --max-size, then blobs no "
            "manifest references (older than --blob-grace). Uses the same storage settings "
            "as serve.",
            epilog="examples:\n  haz-cache-service gc --max-age 30d --dry-run\n"
            "  haz-cache-service gc --storage s3://bucket/haz --max-size 500GiB",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        parser.add_argument("--max-age", metavar="D", help="delete manifests older than D")
        parser.add_argument("--max-size", metavar="SIZE", help="shrink the store to SIZE")
        parser.add_argument(
            "--blob-grace",
            metavar="D",
            default="1h",
            help="keep unreferenced published blobs younger than D (uploaded before their "
            "manifest; default 1h); temp files of unfinished writes follow --temp-grace",
        )
        parser.add_argument("--dry-run", action="store_true", help="report, delete nothing")
        _add_settings(parser)
        return parser
    if command == "admin":
        parser = argparse.ArgumentParser(
            prog="haz-cache-service admin",
            description="Audit and purge what producers wrote.",
            epilog="examples:\n  haz-cache-service admin list-producers\n"
            "  haz-cache-service admin purge --producer ci-pr --namespace pr-12",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        listing = actions.add_parser("list-producers", help="producers and their manifests")
        _add_settings(listing)
        purge = actions.add_parser("purge", help="delete every manifest a producer wrote")
        purge.add_argument("--producer", required=True, metavar="NAME")
        purge.add_argument("--namespace", metavar="NS", help="only this namespace")
        _add_settings(purge)
        return parser
    parser = argparse.ArgumentParser(
        prog="haz-cache-service",
        description="Serve the haz remote cache (manifests and content-addressed blobs) "
        "over gRPC. Every option also reads HAZ_CACHE_<NAME> and the YAML --config file "
        "(flag > environment > file > default). Subcommands: serve (default), gc, admin.",
        epilog="examples:\n"
        "  haz-cache-service\n"
        "  haz-cache-service serve --listen 0.0.0.0:7070 --storage s3://bucket/haz "
        "--metrics-listen 0.0.0.0:9090\n"
        "  HAZ_CACHE_STORAGE=/srv/haz haz-cache-service --config /etc/haz/cache.yaml\n"
        "  haz-cache-service gc --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    _add_settings(parser)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"haz-cache-service: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in _COMMANDS else "serve"
    namespace = build_parser(command).parse_args(args)  # exits 2 on usage errors
    try:
        config = resolve_config(flags=vars(namespace), env=os.environ)
    except ServiceConfigError as exc:
        return _fail(str(exc), 2)

    from cache_service.app import ServiceStartError
    from hazremote.logs import configure_logging

    configure_logging(level=config.log_level, fmt=config.log_format)
    try:
        if command == "serve":
            from cache_service.app import run

            return asyncio.run(run(config))
        return _housekeeping(command, namespace, config)
    except (ValueError, ServiceConfigError) as exc:  # bad values found later: storage, tokens
        return _fail(str(exc), 2)
    except (ServiceStartError, StorageError) as exc:
        return _fail(str(exc), 1)


def _housekeeping(command: str, namespace: argparse.Namespace, config: ServiceConfig) -> int:
    """``gc`` and ``admin``: run against the configured storage and print a summary."""
    import time

    from cache_service import housekeeping
    from cache_service.app import configured_disk_roots, open_configured_storage
    from hazremote.domain.units import parse_duration, parse_size

    blobs, manifests = open_configured_storage(config)
    if command == "gc":
        policy = housekeeping.GcPolicy(
            max_age=None if namespace.max_age is None else parse_duration(namespace.max_age),
            max_size=None if namespace.max_size is None else parse_size(namespace.max_size),
            blob_grace=parse_duration(namespace.blob_grace),
            temp_grace=config.temp_grace,
            dry_run=namespace.dry_run,
        )
        report = housekeeping.collect_garbage(
            blobs=blobs,
            manifests=manifests,
            policy=policy,
            now=time.time(),
            temp_roots=configured_disk_roots(config),
        )
        print(report.render(dry_run=policy.dry_run))
        return 0
    if namespace.action == "list-producers":
        for summary in housekeeping.list_producers(manifests):
            print(f"{summary.producer}\t{summary.manifests}\t{','.join(summary.namespaces)}")
        return 0
    try:
        deleted = housekeeping.purge_producer(
            manifests, producer=namespace.producer, namespace=namespace.namespace
        )
    except InvalidRequestError as exc:
        return _fail(str(exc), 2)
    print(f"deleted {deleted} manifest(s) written by {namespace.producer}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
