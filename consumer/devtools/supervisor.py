"""The process supervision the local broker and the local registry share.

`Supervised` is one child process (a JVM for both) in a folder of its own with its log: `_spawn`
starts it and waits, up to a deadline, for a probe to say it is ready; when it dies or the deadline
passes, the error names the log and quotes its tail, and the process is never left behind. `stop`
sends SIGTERM, then SIGKILL after a bound; `cleanup` also removes the folder unless it is kept.
`LocalKafka` and `LocalRegistry` subclass it with only what is their own (the command line, the
probe, the address).

`StateFile` and `main_action` are the `start`/`stop`/`run` commands of both: `start` leaves the process
running and records it in a JSON file, so that a later `stop`, from another process, finds it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

# Where the dev tools cache what they fetch or build (jars, the registry) and their state files.
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "training-filter"
KILL_WAIT = 10.0  # seconds to wait for a process after SIGKILL (only a process stuck in the kernel takes longer)


class SupervisedError(RuntimeError):
    """A supervised process could not start or stop; the subclasses' errors derive from it."""


def free_ports(count: int, exclude: Iterable[int] = ()) -> list[int]:
    """`count` distinct free TCP ports of 127.0.0.1, none of `exclude` (ports already promised to
    someone that is not listening yet). All the sockets stay bound until every port is picked: one
    at a time, the kernel could hand out the same port twice."""
    taken = set(exclude)
    ports: list[int] = []
    with contextlib.ExitStack() as stack:
        # Ends: the held sockets have distinct ports, so at most len(taken) of them are excluded ones.
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))  # loopback only: a dev broker is never reachable from elsewhere
            port = int(sock.getsockname()[1])
            if port not in taken:
                ports.append(port)
    return ports


def free_port() -> int:
    return free_ports(1)[0]


def find_java(error: type[SupervisedError], what: str) -> str:
    """$JAVA_HOME/bin/java, else the java on PATH."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java:
        raise error(f"java is not on PATH (Java 17 or newer is needed to run {what})")
    return java


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"{code} (killed by {signal.Signals(-code).name})"
    return str(code)


@dataclass
class Supervised:
    """One child process in its folder (`data_dir`, a new temporary one unless given) with its log.
    A subclass sets the class variables and a `start` that calls `_spawn`; `stop` then `start` runs
    it again in the same folder."""

    what: ClassVar[str] = "the process"  # for messages: "the broker exited with 1"
    log_name: ClassVar[str] = "process.log"
    dir_prefix: ClassVar[str] = "tf-process-"
    error: ClassVar[type[SupervisedError]] = SupervisedError
    stop_timeout: ClassVar[float] = 30.0
    address_key: ClassVar[str] = "address"  # the state file's key of `address`

    data_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, kw_only=True, repr=False)
    # False: `cleanup` keeps the folder (one given by the caller, or one whose log should stay).
    _owns_dir: bool = field(default=False, kw_only=True, repr=False)

    def start(self, timeout: float = 60.0) -> Self:
        raise NotImplementedError

    @property
    def address(self) -> str:
        """What a client connects to; the `start` command prints it."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _folder(self) -> Path:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix=self.dir_prefix))
            self._owns_dir = True
        return self.data_dir

    @property
    def log_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / self.log_name

    def log_tail(self, lines: int = 40) -> str:
        try:
            if self.data_dir is not None:
                return tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            pass
        return f"(no log of {self.what})"

    def _spawn(
        self,
        cmd: list[str],
        ready: Callable[[], bool],
        timeout: float,
        interval: float = 0.2,
        **popen: Any,
    ) -> None:
        """Starts `cmd` with its output appended to the log and returns once `ready()` is true.
        Raises `error` (the process stopped) if it exits first or `timeout` seconds pass."""
        self._folder()
        with self.log_path.open("ab") as log:
            # Its own session: the terminal's Ctrl-C or hang-up reaches only the caller, so a
            # `start` command's process outlives it and a test session's stops in order (by `stop`).
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **popen
            )
        try:
            self._wait_ready(ready, timeout, interval)
        except BaseException:
            # A time-out, but also Ctrl-C or a failing probe: being in its own session, the process
            # would get no signal and run on, unsupervised.
            self.stop()
            raise

    def _wait_ready(self, ready: Callable[[], bool], timeout: float, interval: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise self.error(f"{self.what} exited with {_exit_text(code)}; log: {self.log_path}\n{self.log_tail()}")
            if ready():
                return
            if time.monotonic() >= deadline:
                raise self.error(
                    f"{self.what} did not answer within {timeout:.0f}s; log: {self.log_path}\n{self.log_tail()}"
                )
            time.sleep(interval)

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL if it has not exited within `timeout` seconds."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(KILL_WAIT)
            except subprocess.TimeoutExpired:
                raise self.error(f"{self.what} (pid {proc.pid}) did not exit {KILL_WAIT:.0f}s after SIGKILL") from None

    def cleanup(self) -> None:
        """`stop`, then remove the folder if it is this object's own; a later `start` makes a new one."""
        self.stop()
        if self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir, self._owns_dir = None, False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), None without /proc.
    With the pid it names one process: a pid alone can be reused once the recorded process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2, the command name in parentheses, may hold spaces: count the fields after its ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie has exited: it only awaits its parent


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists; the start time says whether it is ours
        pass
    now = _start_time(pid)
    if now is None:
        return not Path("/proc").is_dir()  # no /proc (not Linux): the pid is all there is to go by
    return started is None or now == started  # None: a state file from before start times were kept


@dataclass(frozen=True)
class StateFile:
    """The JSON file by which `start` and `stop`, run as separate commands, share one process."""

    path: Path

    def record(self, proc: Supervised) -> None:
        assert proc.process is not None and proc.data_dir is not None
        info = {
            "pid": proc.process.pid,
            "started": _start_time(proc.process.pid),
            proc.address_key: proc.address,
            "data_dir": str(proc.data_dir),
            "log": str(proc.log_path),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(info))
        partial.replace(self.path)  # a reader sees the old file or the whole new one

    def read(self) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        return info

    @staticmethod
    def alive(info: dict[str, Any]) -> bool:
        """Whether the very process of a record still runs."""
        return _alive(int(info["pid"]), info.get("started"))

    def stop(self, timeout: float) -> bool:
        """Stops the recorded process (SIGTERM, SIGKILL after `timeout`) if it still runs, then removes
        its folder and the file. False: nothing was recorded."""
        info = self.read()
        if info is None:
            return False
        if self.alive(info):
            _terminate(int(info["pid"]), info.get("started"), timeout)
        self.forget(info)
        return True

    def forget(self, info: dict[str, Any]) -> None:
        """Removes the folder of a recorded process that no longer runs, and the file."""
        shutil.rmtree(info["data_dir"], ignore_errors=True)
        self.path.unlink(missing_ok=True)


def _gone(pid: int, started: str | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid, started):
        if time.monotonic() >= deadline:
            return False
        with contextlib.suppress(ChildProcessError):  # reaped here only when it is this process's child
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    return True


def _terminate(pid: int, started: str | None, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _gone(pid, started, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _gone(pid, started, KILL_WAIT):
        raise SupervisedError(f"process {pid} did not exit {KILL_WAIT:.0f}s after SIGKILL")


def main_action(action: str, state: Path, kind: type[Supervised]) -> int:
    """The `start`, `stop` and `run` commands of a supervised process of class `kind`."""
    states = StateFile(state)
    if action == "stop":
        if states.stop(kind.stop_timeout):
            print("stopped")
        else:
            print(f"nothing is recorded as running in {state}", file=sys.stderr)
        return 0
    try:
        with _signals_interrupt():
            return _start(states, kind) if action == "start" else _run(kind)
    except KeyboardInterrupt:  # while starting: `_spawn` has stopped the process already
        print(f"interrupted: {kind.what} was stopped", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, so that each ends in `stop`. The
    process is in a session of its own: these signals reach only this command, which must pass them
    on (otherwise a command killed while it waits leaves the process running, unrecorded)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start(states: StateFile, kind: type[Supervised]) -> int:
    """Starts and records the process, leaving it running; or prints the address of the recorded one."""
    info = states.read()
    if info is not None and states.alive(info):
        print(info[kind.address_key])
        return 0
    if info is not None:
        states.forget(info)  # a stale record: its process is gone, its folder may not be
    proc = kind().start()
    states.record(proc)
    print(proc.address)
    print(f"log: {proc.log_path}", file=sys.stderr)
    return 0


def _run(kind: type[Supervised]) -> int:
    """In the foreground until Ctrl-C, SIGTERM or SIGHUP, then `cleanup`."""
    with kind() as proc, contextlib.suppress(KeyboardInterrupt):
        # The address first tells the caller it may stop us: a signal from then on must end in cleanup,
        # not escape between the print and the wait (a race a loaded machine loses).
        print(proc.address, flush=True)
        print(f"log: {proc.log_path} (Ctrl-C stops it)", file=sys.stderr, flush=True)
        while proc.running:
            time.sleep(1)
    return 0
