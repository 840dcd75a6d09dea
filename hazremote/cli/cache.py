"""``haz cache info | clean | clear`` — the local cache's housekeeping (CACHE-021/022).

``clean`` without flags uses the workspace's ``cache.clean`` settings (``max_age``,
``max_size``); ``--soft`` removes only corrupt or schema-mismatched entries and leftover
staging directories; ``--dry-run`` lists what would go and deletes nothing.
"""

from __future__ import annotations

import argparse

from hazremote.cli.context import open_workspace
from hazremote.cli.session import open_cache
from hazremote.domain.units import format_size as _size
from hazremote.domain.units import parse_duration, parse_size
from hazremote.errors import UsageError


def run(args: argparse.Namespace) -> int:
    context = open_workspace(args)
    cache = open_cache(context.workspace)
    if args.action != "clean" and (args.soft or args.max_age or args.max_size or args.dry_run):
        raise UsageError("--soft, --max-age, --max-size and --dry-run apply to `clean` only")
    if args.action == "info":
        info = cache.info()
        print(f"cache: {info.root}")
        print(f"  entries: {info.entries} ({_size(info.bytes)})")
        print(f"  corrupt entries: {info.corrupt_entries}")
        print(f"  schema-mismatched entries: {info.schema_mismatched_entries}")
        print(f"  leftover temp dirs: {info.orphan_temp_dirs} ({_size(info.orphan_bytes)})")
        return 0
    if args.action == "clear":
        report = cache.clear()
        print(f"removed {len(report.removed)} shard(s), {_size(report.freed_bytes)}")
        return 0
    settings = context.workspace.settings.cache
    try:
        max_age = parse_duration(args.max_age) if args.max_age else None
        max_size = parse_size(args.max_size) if args.max_size else None
    except ValueError as error:
        raise UsageError(str(error)) from error
    if not (args.soft or max_age is not None or max_size is not None):
        max_age, max_size = settings.clean_max_age_s, settings.clean_max_size
        if max_age is None and max_size is None:
            raise UsageError(
                "nothing to clean by: pass --soft, --max-age or --max-size, "
                "or set cache.clean in .haz/workspace.yml"
            )
    report = cache.clean(soft=args.soft, max_age_s=max_age, max_size=max_size, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for item in report.removed:
        print(f"{verb} {item.path} ({item.reason.value}, {_size(item.bytes)})")
    print(
        f"{verb} {len(report.removed)} item(s), {_size(report.freed_bytes)}; "
        f"{report.remaining_entries} entries ({_size(report.remaining_bytes)}) remain"
    )
    return 0
