"""The ``haz`` command line: argument parsing and dispatch.

Spec coverage:
* Commands (§5) — the command-line contract, no abbreviations, ``--help`` with examples.
* EXEC-021 — exit codes: 0 ok, 2 configuration/reference/usage errors; a HazError's own code.
* EXEC-040 — diagnostics on stderr; ``--log-level`` and ``--log-format``.
Out of scope: the commands themselves (one module each, imported lazily).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["build_parser", "main"]

_EPILOG = """\
examples:
  haz check                       validate the workspace configuration
  haz query --tags 'frontend&!legacy' --format json
  haz graph web:build --format mermaid
  haz init --yes                  create .haz/workspace.yml for an existing repository

Run `haz COMMAND --help` for the options of one command.
"""


_DRY_RUN_FORMATS = ("plain", "json")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


class _DryRun(argparse.Action):
    """``--dry-run`` takes no word after it; usage shows ``--dry-run[=json]`` (SPEC §5)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        del parser, values
        text = option_string or "--dry-run"
        setattr(namespace, self.dest, text.partition("=")[2] or "plain")

    def format_usage(self) -> str:
        return "--dry-run[=json]"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        if message.startswith("argument --dry-run: ignored explicit argument"):
            value = message.rsplit(" ", 1)[-1]
            message = (
                f"argument --dry-run: unknown format {value} "
                f"(use --dry-run or --dry-run={' or --dry-run='.join(_DRY_RUN_FORMATS[1:])})"
            )
        super().error(message)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace-root",
        metavar="DIR",
        help="use DIR as the workspace root instead of discovering it",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="diagnostic log level (default: warning)",
    )
    parser.add_argument(
        "--log-format",
        default="console",
        choices=["console", "json"],
        help="diagnostic log format on stderr (default: console)",
    )


def _command(
    sub: argparse._SubParsersAction[_Parser],
    name: str,
    *,
    handler: str,
    help_text: str,
    examples: str,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog="examples:\n" + examples,
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    parser.set_defaults(handler=handler)
    _add_common(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="haz",
        description="haz — a monorepo task runner with a content-addressed, shared cache.",
        epilog=_EPILOG,
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = _command(
        sub,
        "run",
        handler="hazremote.cli.run:run",
        help_text="run tasks, restoring the results the cache already has",
        examples=(
            "  haz run                         # the `default` task (of this project, or all)\n"
            "  haz run build                   # ~:build inside a project, ^:build outside\n"
            "  haz run web:build api:test -j 4\n"
            "  haz run --workspace --git-changed-since origin/main\n"
            "  haz run build --dry-run         # keys and predicted cache state, runs nothing\n"
            "  haz run --dry-run=json web:build  # the same as JSON (the format needs the =)\n"
            "  haz run --all --summary-json summary.json\n"
            "  haz run --workspace --remote grpc://cache.internal:7070 --remote-mode read-only\n"
        ),
    )
    run.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="tasks to run (project:task, or a bare task name: that task of the project "
        "containing the current directory, or of every project outside one); with no TARGET "
        "and no --all/--workspace, the `default` task",
    )
    run_scope = run.add_mutually_exclusive_group()
    run_scope.add_argument(
        "--all",
        action="store_true",
        help="every task of the project containing the current directory (at a root that is "
        "itself a project: that project only); every task of the workspace outside any project",
    )
    run_scope.add_argument(
        "--workspace",
        action="store_true",
        help="every task of the workspace, wherever you are",
    )
    git = run.add_mutually_exclusive_group()
    git.add_argument(
        "--git-changed",
        action="store_true",
        help="only tasks affected by uncommitted changes (tracked and untracked): tasks whose "
        "inputs changed and everything depending on them, within --all/--workspace",
    )
    git.add_argument(
        "--git-staged", action="store_true", help="only tasks affected by staged changes"
    )
    git.add_argument(
        "--git-changed-since",
        metavar="REV",
        help="only tasks affected by changes since the merge-base of REV and HEAD",
    )
    # SPEC §5 `--dry-run[=json]`: the format is taken only from `--dry-run=FORMAT`, never from
    # the next word, so `haz run --dry-run web:build` dry-runs web:build (git's `--color[=WHEN]`
    # convention). argparse matches a whole registered option string before it splits at `=`.
    run.add_argument(
        "--dry-run",
        action=_DryRun,
        help="print keys and predicted cache state; run nothing (--dry-run=json: as JSON; "
        "the format needs the `=`: a word after --dry-run is a TARGET)",
    )
    for dry_run_format in _DRY_RUN_FORMATS:
        run.add_argument(
            f"--dry-run={dry_run_format}", dest="dry_run", action=_DryRun, help=argparse.SUPPRESS
        )
    run.add_argument("--output", choices=["live", "buffered"], help="task output mode")
    run.add_argument("-j", "--jobs", type=int, metavar="N", help="at most N tasks at once")
    run.add_argument("--force", action="store_true", help="skip cache lookups (still store)")
    run.add_argument("--no-cache", action="store_true", help="neither look up nor store")
    run.add_argument("--summary-json", metavar="FILE", help="write the run summary as JSON to FILE")
    run.add_argument(
        "--remote", metavar="URL", help="remote cache grpc://HOST:PORT (or HAZ_REMOTE_URL)"
    )
    run.add_argument(
        "--remote-mode",
        choices=["off", "read-only", "read-write"],
        help="use of the remote cache (default read-write when a URL is set)",
    )
    run.add_argument(
        "--remote-namespace", metavar="NS", help="remote cache namespace (default main)"
    )
    run.add_argument(
        "--remote-ca", metavar="FILE", help="CA certificate of a grpcs:// (TLS) remote"
    )
    run.add_argument(
        "--remote-exec",
        metavar="POLICY",
        help="run misses on remote workers: never (default), auto (fall back to local) or "
        "always (wait for a worker); or HAZ_REMOTE_EXEC, remote.execute",
    )
    run.add_argument(
        "--remote-jobs",
        type=int,
        metavar="N",
        help="remote executions at a time, independent of -j (default: the service's free "
        "worker slots)",
    )

    why = _command(
        sub,
        "why",
        handler="hazremote.cli.why:run",
        help_text="explain a task's cache key, its lookup, and what changed since it was stored",
        examples="  haz why web:build\n  cd packages/web && haz why build\n",
    )
    why.add_argument("task", metavar="TASK", help="the task (project:task, or a bare name)")

    cache = _command(
        sub,
        "cache",
        handler="hazremote.cli.cache:run",
        help_text="inspect and clean the local cache",
        examples=(
            "  haz cache info\n"
            "  haz cache clean --soft --dry-run\n"
            "  haz cache clean --max-age 7d --max-size 10GB\n"
            "  haz cache clear\n"
        ),
    )
    cache.add_argument("action", choices=["info", "clean", "clear"])
    cache.add_argument(
        "--soft", action="store_true", help="clean: only corrupt entries and leftover temp dirs"
    )
    cache.add_argument("--max-age", metavar="D", help="clean: entries older than D (e.g. 7d)")
    cache.add_argument("--max-size", metavar="B", help="clean: oldest first down to B (e.g. 10GB)")
    cache.add_argument("--dry-run", action="store_true", help="clean: list, delete nothing")

    doctor = _command(
        sub,
        "doctor",
        handler="hazremote.cli.doctor:run",
        help_text="check the configuration, the local cache and the remote cache service",
        examples="  haz doctor\n  haz doctor --remote grpc://cache.internal:7070\n",
    )
    doctor.add_argument("--remote", metavar="URL", help="the remote cache to check")
    doctor.add_argument("--remote-ca", metavar="FILE", help="CA certificate of a grpcs:// remote")

    check = _command(
        sub,
        "check",
        handler="hazremote.cli.check:run",
        help_text="validate the workspace configuration and the task graph",
        examples="  haz check\n  haz check --workspace\n",
    )
    scope = check.add_mutually_exclusive_group()
    scope.add_argument(
        "--all", action="store_true", help="every task of the bearing project (default)"
    )
    scope.add_argument("--workspace", action="store_true", help="every task of the workspace")

    query = _command(
        sub,
        "query",
        handler="hazremote.cli.query:run",
        help_text="list tasks matching filter expressions",
        examples=(
            "  haz query --tags 'frontend|backend'\n"
            "  haz query --projects 'web&!legacy' --tasks build --format json\n"
        ),
    )
    query.add_argument("--projects", metavar="EXPR", help="filter on project names")
    query.add_argument("--tasks", metavar="EXPR", help="filter on task names")
    query.add_argument("--tags", metavar="EXPR", help="filter on project tags")
    query.add_argument("--format", choices=["plain", "json"], default="plain")

    graph = _command(
        sub,
        "graph",
        handler="hazremote.cli.graph:run",
        help_text="print the task graph (hard edges solid, soft edges dashed)",
        examples="  haz graph\n  haz graph web:build --format dot | dot -Tsvg > graph.svg\n",
    )
    graph.add_argument("targets", nargs="*", metavar="TARGET", help="restrict to these tasks")
    graph.add_argument("--format", choices=["dot", "mermaid", "json"], default="dot")

    init = _command(
        sub,
        "init",
        handler="hazremote.cli.init:run",
        help_text="create .haz/workspace.yml, proposing the project directories found",
        examples="  haz init          # propose, then ask\n  haz init --yes    # write\n",
    )
    init.add_argument("--yes", action="store_true", help="write without asking")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``haz``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from hazremote import __version__

        print(f"haz {__version__}")
        return 0
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2

    import gc

    from hazremote.errors import HazError

    # A command allocates many small long-lived objects (the workspace, the graph) and makes
    # few reference cycles; the default collector thresholds cost a large run ~10 % of its time.
    gc.set_threshold(100_000, 50, 100)
    from hazremote.logs import configure_logging

    configure_logging(level=args.log_level, fmt=args.log_format)
    module_name, _, func_name = args.handler.partition(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        code: int = handler(args)
    except HazError as error:
        print(f"haz: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `haz query | head`: the reader left; not an error of ours.
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    raise SystemExit(main())
