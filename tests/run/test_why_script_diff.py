"""``haz why`` end to end: a changed ``shell:`` script is shown as a line diff.

Spec coverage: SPEC §5 ``haz why`` (on a miss, the command component that differs from the
most recent stored entry, as a unified diff of the script).
"""

from __future__ import annotations

from tests.run.conftest import HazRunner, WorkspaceMaker

BEFORE = "tasks:\n  build:\n    inputs: []\n    shell: |\n      echo one\n      echo two\n"
AFTER = "tasks:\n  build:\n    inputs: []\n    shell: |\n      echo one\n      echo 2\n"


def test_why_shows_a_changed_script_as_a_unified_diff(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    root = make_workspace({".haz/workspace.yml": "", "haz.yml": BEFORE})
    assert haz("run", "build", cwd=root).code == 0
    (root / "haz.yml").write_text(AFTER)
    result = haz("why", "build", cwd=root)
    assert result.code == 0, result.stderr
    lines = result.out.splitlines()
    assert "  action: sh script (2 lines):" in lines
    assert "    | echo 2" in lines
    start = lines.index("    action changed: sh script (1 line added, 1 removed)")
    assert lines[start + 1 : start + 7] == [
        "      --- stored",
        "      +++ current",
        "      @@ -1,2 +1,2 @@",
        "       echo one",
        "      -echo two",
        "      +echo 2",
    ]
    assert "\\n" not in result.out  # no quoted blob with escaped newlines
