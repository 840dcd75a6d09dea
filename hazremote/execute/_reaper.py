"""The per-task process supervisor: one small Python process between haz and each command.

Run as ``python -I -S _reaper.py`` with a connected control socket as its stdin, the task's
stdout/stderr pipes as its stdout/stderr and the task's working directory as its cwd. It
imports the standard library only; :mod:`hazremote.execute.spawn` imports it for the protocol
constants below. Without ``/proc`` and ``PR_SET_CHILD_SUBREAPER`` (not Linux) it tracks only
the process group.

Spec coverage:
* EXEC-008 — stdin ``/dev/null``; exactly the given env; the program looked up on its ``PATH``.
* EXEC-008 — the command leads its own process group; descendants are tracked as a subreaper.
* EXEC-008 — when the command exits, its group and every remaining descendant are killed, reaped.
* EXEC-008 — a command that cannot start is reported (``error <errno>``), not run.
* EXEC-012..015 — ``term``: SIGTERM to the group and escaped descendants; ``kill``: SIGKILL.
* EXEC-012..015 — after ``term`` descendants keep the grace period; socket EOF kills everything.
Out of scope: timeouts and grace periods (haz sends ``term``/``kill``), stream capture (the
command writes straight into haz's pipes).

Protocol (after the request, one ASCII line per message):
* haz → supervisor: a line ``<n>`` then ``n`` bytes: the argument count, the arguments and the
  ``NAME=value`` environment entries, NUL-separated (:func:`encode_request`); then any of
  ``term`` / ``kill``.
* supervisor → haz: ``started <pid>`` or ``error <errno>``; then, after every descendant is
  gone, ``exit <code>`` or ``signal <number>``; then the supervisor exits 0.
"""

from __future__ import annotations

import errno
import os
import select
import sys

# Not ``typing.TYPE_CHECKING``: importing ``typing`` costs this short-lived process ~5 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:  # the builtin core of ``signal``: importing ``signal`` itself costs ~3 ms (enum)
    import _signal as signal

MSG_STARTED = "started"
MSG_ERROR = "error"
MSG_EXIT = "exit"
MSG_SIGNAL = "signal"
CMD_TERM = "term"
CMD_KILL = "kill"

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Python ignores these at start-up; an exec'd command must get the default disposition back.
_RESTORE_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, *_STOP_SIGNALS)


def encode_request(argv: list[bytes], env: list[bytes]) -> bytes:
    """The request as haz sends it; no element may contain a NUL byte."""
    payload = b"\0".join([str(len(argv)).encode(), *argv, *env])
    return str(len(payload)).encode() + b"\n" + payload


def _decode_request(payload: bytes) -> tuple[list[bytes], dict[bytes, bytes]]:
    count, *items = payload.split(b"\0")
    argv = items[: int(count)]
    env = dict(entry.partition(b"=")[::2] for entry in items[int(count) :])
    return argv, env


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(option, value, 0, 0, 0) == 0)


def _children_map() -> dict[int, list[int]]:
    """Parent pid → child pids, from ``/proc`` (empty where there is no ``/proc``)."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return children
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue  # exited meanwhile
        # The command name may contain spaces and parentheses: fields start after the last ")".
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(name))
    return children


def _descendants(root: int) -> list[int]:
    tree = _children_map()
    found: list[int] = []
    stack = list(tree.get(root, ()))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(tree.get(pid, ()))
    return found


def _signal(pid: int, sig: int, *, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exec_child(argv: list[bytes], env: dict[bytes, bytes], report_fd: int, parent: int) -> None:
    """In the forked child: become a group leader, reset signals, exec. Never returns."""
    try:
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        for sig in _RESTORE_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        # If the supervisor dies abruptly, the command must not outlive it.
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(127)
        program = argv[0]
        if b"/" in program:
            candidates = [program]
        else:
            path_dirs = os.get_exec_path(env)  # type: ignore[arg-type]  # bytes keys work
            candidates = [os.path.join(os.fsencode(d), program) for d in path_dirs]
        failure: OSError | None = None
        for path in candidates:
            try:
                os.execve(path, argv, env)
            except OSError as error:
                # Like execvp: a candidate that exists but cannot run beats "not found".
                if failure is None or (
                    failure.errno in (errno.ENOENT, errno.ENOTDIR)
                    and error.errno not in (errno.ENOENT, errno.ENOTDIR)
                ):
                    failure = error
        code = failure.errno if failure is not None and failure.errno else errno.ENOENT
        os.write(report_fd, str(code).encode())
    except BaseException:
        os.write(report_fd, str(errno.EINVAL).encode())
    finally:
        os._exit(127)


class _Supervisor:
    def __init__(self, ctl: int) -> None:
        self.ctl: int | None = ctl
        self.pid = os.getpid()
        self.command = 0
        self.terminating = False
        self.killing = False
        self.pending = b""
        self.wake = -1

    def send(self, line: str) -> None:
        if self.ctl is None:
            return
        try:
            os.write(self.ctl, (line + "\n").encode())
        except OSError:
            self.ctl = None

    def escaped(self) -> list[int]:
        """Descendants outside the command's process group (they missed the group signal)."""
        found = []
        for pid in _descendants(self.pid):
            try:
                if os.getpgid(pid) != self.command:
                    found.append(pid)
            except ProcessLookupError:
                continue
        return found

    def term(self) -> None:
        if self.terminating:
            return
        self.terminating = True
        _signal(self.command, signal.SIGTERM, group=True)
        for pid in self.escaped():
            _signal(pid, signal.SIGTERM, group=False)

    def kill(self) -> None:
        self.terminating = self.killing = True
        _signal(self.command, signal.SIGKILL, group=True)
        for pid in _descendants(self.pid):
            _signal(pid, signal.SIGKILL, group=False)

    def on_control(self) -> None:
        assert self.ctl is not None
        try:
            data = os.read(self.ctl, 4096)
        except OSError:
            data = b""
        if not data:
            # haz is gone: nobody will read the result, so nothing may survive.
            os.close(self.ctl)
            self.ctl = None
            self.kill()
            return
        self.pending += data
        self.handle_commands()

    def handle_commands(self) -> None:
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            if line.strip() == CMD_KILL.encode():
                self.kill()
            elif line.strip() == CMD_TERM.encode():
                self.term()

    def command_exited(self) -> os.waitid_result | None:
        """The command's exit, observed without reaping it, so its group id stays reserved."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return None
            if info is None:
                return None
            if info.si_pid == self.command:
                return info
            # An adopted orphan that already died: reap it now. (No contextlib here: every
            # import costs this short-lived process start-up time.)
            try:  # noqa: SIM105
                os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                pass

    def wait_for_events(self) -> None:
        """Block until a signal or a control message arrives (or a second passes); handle it."""
        watched = [self.wake] if self.ctl is None else [self.wake, self.ctl]
        ready, _, _ = select.select(watched, [], [], 1.0)
        if self.wake in ready:
            for number in os.read(self.wake, 4096):
                if number in _STOP_SIGNALS:
                    self.term()
        if self.ctl is not None and self.ctl in ready:
            self.on_control()

    def reap_exited(self) -> bool:
        """Reap every child that has exited; False once no child is left at all."""
        try:
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        except ChildProcessError:
            return False
        return True

    def reap_everything(self) -> None:
        """SIGKILL and reap every remaining descendant until this process has no child."""
        while self.reap_exited():
            # Children remain (and, we being the subreaper, every other descendant is below
            # one of them): kill the whole tree, then wait for a death and look again.
            for pid in _descendants(self.pid):
                _signal(pid, signal.SIGKILL, group=False)
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return

    def run(self, argv: list[bytes], env: dict[bytes, bytes]) -> None:
        self.wake, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGCHLD, *_STOP_SIGNALS):
            signal.signal(sig, lambda *_: None)
        report_r, report_w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(report_r)
            _exec_child(argv, env, report_w, self.pid)
        os.close(report_w)
        self.command = child
        try:  # noqa: SIM105
            os.setpgid(child, child)  # both sides set it, so no signal can miss the group
        except OSError:
            pass
        failure = b""
        while chunk := os.read(report_r, 4096):
            failure += chunk
        os.close(report_r)
        if failure:
            os.waitpid(child, 0)
            self.send(f"{MSG_ERROR} {failure.decode()}")
            return
        self.send(f"{MSG_STARTED} {child}")
        self.handle_commands()  # a command may have arrived together with the request
        exited = None
        while exited is None:
            self.wait_for_events()
            exited = self.command_exited()
        if self.terminating and not self.killing:
            # A graceful stop: the rest of the tree got SIGTERM too and keeps the rest of the
            # grace period to exit (haz sends ``kill`` when it ends).
            os.waitpid(child, 0)
            while not self.killing and self.reap_exited():
                self.wait_for_events()
            _signal(child, signal.SIGKILL, group=True)
        else:
            _signal(child, signal.SIGKILL, group=True)  # the zombie keeps the group id reserved
            os.waitpid(child, 0)
        self.reap_everything()
        if exited.si_code == os.CLD_EXITED:
            self.send(f"{MSG_EXIT} {exited.si_status}")
        else:
            self.send(f"{MSG_SIGNAL} {exited.si_status}")


def main() -> None:
    ctl = os.dup(0)  # non-inheritable: the command must not see the control socket
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    data = b""
    size = -1
    while size < 0 or len(data) < size:
        chunk = os.read(ctl, 65536)
        if not chunk:
            sys.exit(3)  # haz went away before sending the whole request
        data += chunk
        if size < 0 and b"\n" in data:
            head, _, data = data.partition(b"\n")
            size = int(head)
    supervisor = _Supervisor(ctl)
    supervisor.pending = data[size:]
    # Best effort: without it (not Linux) only the command's process group is tracked.
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    supervisor.run(*_decode_request(data[:size]))
    os._exit(0)  # nothing to flush or finalise; skipping interpreter teardown saves ~4 ms


if __name__ == "__main__":
    main()
