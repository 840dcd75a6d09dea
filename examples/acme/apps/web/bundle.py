"""A toy bundler: concatenates src/*.js in dependency-free order into one file."""

import os
import pathlib
import sys

if sys.argv[1] == "--check":
    sources = sorted(pathlib.Path(sys.argv[2]).rglob("*.js"))
    bad = [p for p in sources if "debugger" in p.read_text()]
    for path in bad:
        print(f"{path}: remove debugger statement")
    print(f"checked {len(sources)} file(s)")
    sys.exit(1 if bad else 0)
sources = sorted(pathlib.Path(sys.argv[1]).rglob("*.js"))
out = pathlib.Path(sys.argv[2])
out.parent.mkdir(parents=True, exist_ok=True)
banner = f"/* acme web bundle ({os.environ.get('BUNDLE_MODE', 'dev')}) */\n"
out.write_text(banner + "".join(f"// {p.name}\n{p.read_text()}" for p in sources))
print(f"bundled {len(sources)} file(s) into {out}")
