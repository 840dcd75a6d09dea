"""``haz why``: a changed action is shown as a diff, not as two quoted blobs.

Spec coverage:
* SPEC §5 ``haz why`` — on a miss, the command component that differs: a ``shell:`` script as
  a unified line diff of the stored script against the current one, an argv as the old and
  the new command line (shell-quoted only where a word needs it), a switch between
  ``command:`` and ``shell:`` as both in full.
"""

from __future__ import annotations

from hazremote.cache.why import action_change
from hazremote.domain.model import CommandAction, ShellAction

OLD = "set -e\ncc -O2 -c a.c\ncc -O2 -c b.c\nar rcs libx.a a.o b.o\n"
NEW = "set -e\ncc -O3 -c a.c\ncc -O2 -c b.c\nar rcs libx.a a.o b.o\nranlib libx.a\n"


def test_a_changed_script_is_a_unified_line_diff() -> None:
    change = action_change(ShellAction(shell="sh", script=NEW), ShellAction(shell="sh", script=OLD))
    assert change is not None
    assert change.kind == "action-changed"
    assert change.render() == "action changed: sh script (2 lines added, 1 removed)"
    assert change.lines == (
        "--- stored",
        "+++ current",
        "@@ -1,4 +1,5 @@",
        " set -e",
        "-cc -O2 -c a.c",
        "+cc -O3 -c a.c",
        " cc -O2 -c b.c",
        " ar rcs libx.a a.o b.o",
        "+ranlib libx.a",
    )
    assert not any("'" in line for line in change.lines)  # no quoted blobs


def test_an_unchanged_action_is_no_change() -> None:
    same = ShellAction(shell="sh", script=OLD)
    assert action_change(same, ShellAction(shell="sh", script=OLD)) is None
    assert action_change(CommandAction(argv=("make",)), CommandAction(argv=("make",))) is None


def test_a_changed_shell_interpreter_is_named() -> None:
    change = action_change(
        ShellAction(shell="bash", script=OLD), ShellAction(shell="sh", script=OLD)
    )
    assert change is not None
    assert change.render() == "action changed: shell sh → bash (script unchanged)"
    assert change.lines == ()


def test_a_changed_argv_shows_both_command_lines_readably() -> None:
    change = action_change(
        CommandAction(argv=("cc", "-O3", "-o", "my prog", "main.c")),
        CommandAction(argv=("cc", "-O2", "-o", "my prog", "main.c")),
    )
    assert change is not None
    assert change.render() == "action changed: command (argument 2 of 5 changed)"
    assert change.lines == ("- cc -O2 -o 'my prog' main.c", "+ cc -O3 -o 'my prog' main.c")


def test_a_switch_between_command_and_shell_shows_both_in_full() -> None:
    change = action_change(
        ShellAction(shell="sh", script="make all\nmake check"), CommandAction(argv=("make",))
    )
    assert change is not None
    assert change.render() == "action changed: command: → shell: (sh)"
    assert change.lines == ("- make", "+ make all", "+ make check")
