"""Entry point of ``haz-worker``.

Named placeholder allowed by the foundation issue until its own issue lands: it prints
"not yet available" and exits 2 (EXEC-021: usage/configuration error).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    del argv
    print("haz-worker: not yet available in this version of haz remote", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
