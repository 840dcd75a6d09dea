"""A tiny linter: every module compiles, no tabs, no line longer than 100 characters."""

import pathlib
import sys

problems = 0
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.py")):
    if path.name == "generated.py":  # generated code is not ours to lint
        continue
    text = path.read_text()
    compile(text, str(path), "exec")
    for number, line in enumerate(text.splitlines(), 1):
        if "\t" in line or len(line) > 100:
            print(f"{path}:{number}: style problem")
            problems += 1
print(f"lint: {problems} problem(s)")
sys.exit(1 if problems else 0)
