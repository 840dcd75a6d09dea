"""Build a Python package: copy sources into dist/ and write a manifest of their sizes."""

import json
import pathlib
import shutil
import sys

src, dist = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
files = sorted(p for p in src.rglob("*.py"))
for path in files:
    target = dist / path.relative_to(src)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
manifest = {p.relative_to(src).as_posix(): p.stat().st_size for p in files}
(dist / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
print(f"built {len(files)} module(s) into {dist}")
