"""The process supervision of the local broker and registry, with small Python children standing in
for the JVMs: one that becomes ready, one that never does, one that dies at once, one that ignores
SIGTERM. Every child sleeps at most 30 s, so nothing outlives a failed test for long."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumer.devtools import supervisor
from consumer.devtools.supervisor import StateFile, Supervised, SupervisedError, free_ports, main_action

READY = "import pathlib, time; print('child up', flush=True); pathlib.Path('ready').touch(); time.sleep(30)"
NEVER_READY = "import time; print('child still starting', flush=True); time.sleep(30)"
DIES = "import sys; print('child: bad setting', flush=True); sys.exit(3)"
GRACEFUL = """
import pathlib, signal, sys, time
def bye(*_):
    print('child stopping cleanly', flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
pathlib.Path('ready').touch()
time.sleep(30)
"""
STUBBORN = """
import pathlib, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path('ready').touch()
time.sleep(30)
"""


class ChildError(SupervisedError):
    pass


@dataclass
class Child(Supervised):
    what = "the child"
    log_name = "child.log"
    dir_prefix = "tf-test-child-"
    error = ChildError
    stop_timeout = 5.0

    script: str = READY

    @property
    def address(self) -> str:
        return f"child-{self.process.pid if self.process else 0}"

    def start(self, timeout: float = 10.0) -> Child:
        (self._folder() / "ready").unlink(missing_ok=True)  # the sign of a previous run
        self._spawn([sys.executable, "-c", self.script], self._ready, timeout, interval=0.05, cwd=self._folder())
        return self

    def _ready(self) -> bool:
        assert self.data_dir is not None
        return (self.data_dir / "ready").exists()


@pytest.fixture
def children():
    """Every Child a test makes through it, cleaned up after the test whatever happened."""
    made: list[Child] = []

    def make(**kwargs) -> Child:
        made.append(Child(**kwargs))
        return made[-1]

    yield make
    for child in made:
        child.cleanup()


def test_start_returns_once_the_probe_says_ready_and_stop_is_a_sigterm(children):
    child = children(script=GRACEFUL).start()
    assert child.running and child.data_dir is not None and child.data_dir.name.startswith("tf-test-child-")
    child.stop()
    assert child.process is not None and child.process.returncode == 0
    assert "child stopping cleanly" in child.log_path.read_text()


def test_a_child_that_never_becomes_ready_times_out_with_its_log_and_is_stopped(children):
    child = children(script=NEVER_READY)
    started = time.monotonic()
    with pytest.raises(ChildError) as failed:
        child.start(timeout=1)
    assert time.monotonic() - started < 1 + child.stop_timeout
    message = str(failed.value)
    assert "the child did not answer within 1s" in message
    assert str(child.log_path) in message and "child still starting" in message
    assert child.process is not None and child.process.poll() is not None
    assert child.log_path.is_file()  # the log stays for the reader of the message


def test_a_child_that_dies_at_once_reports_its_exit_code_and_log_tail(children):
    with pytest.raises(ChildError) as failed:
        children(script=DIES).start(timeout=10)
    assert "the child exited with 3;" in str(failed.value)
    assert "child: bad setting" in str(failed.value)


def test_a_child_killed_by_a_signal_says_which(children):
    with pytest.raises(ChildError, match=r"exited with -9 \(killed by SIGKILL\)"):
        children(script="import os, signal; os.kill(os.getpid(), signal.SIGKILL)").start(timeout=10)


def test_a_child_that_ignores_sigterm_is_killed_after_the_bound(children):
    child = children(script=STUBBORN).start()
    started = time.monotonic()
    child.stop(timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 0.5 + supervisor.KILL_WAIT
    assert child.process is not None and child.process.returncode == -signal.SIGKILL


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_wait_leaves_no_process_behind(children, interruption):
    child = children(script=NEVER_READY)

    def probe() -> bool:
        raise interruption("Ctrl-C, or a probe that fails")

    with pytest.raises(interruption):
        child._spawn([sys.executable, "-c", NEVER_READY], probe, timeout=10)
    assert child.process is not None and child.process.poll() is not None


def test_cleanup_removes_its_own_folder_only(children, tmp_path):
    own = children().start()
    own_dir = own.data_dir
    own.cleanup()
    assert own_dir is not None and not own_dir.exists() and own.data_dir is None
    given = children(data_dir=tmp_path / "given")
    given.data_dir.mkdir()  # type: ignore[union-attr]
    given.start().cleanup()
    assert (tmp_path / "given" / "child.log").is_file()
    kept = children().start()
    kept._owns_dir = False  # what the test session does to keep the log of a failed run
    kept.cleanup()
    assert kept.data_dir is not None and kept.log_path.is_file()
    shutil.rmtree(kept.data_dir)


def test_stop_then_start_runs_again_in_the_same_folder(children):
    child = children().start()
    folder, first = child.data_dir, child.process
    child.stop()
    assert child.start() is child and child.data_dir == folder and child.process is not first
    assert child.log_path.read_text().count("child up") == 2


def test_the_context_manager_starts_and_cleans_up():
    with Child() as child:
        assert child.running
        folder = child.data_dir
    assert not child.running and folder is not None and not folder.exists()


def test_free_ports_are_distinct_and_free_on_loopback():
    ports = free_ports(20)
    assert len(set(ports)) == 20
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_free_ports_skip_the_excluded_ones(monkeypatch):
    offered = iter([5001, 5002, 5003, 5004])

    class FakeSocket:
        def __init__(self, *args):
            self.port = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def bind(self, address):
            assert address == ("127.0.0.1", 0)
            self.port = next(offered)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(supervisor.socket, "socket", FakeSocket)
    assert free_ports(2, exclude={5001, 5003}) == [5002, 5004]


# -- the state file of the start and stop commands --------------------------------------------------


def test_start_records_and_a_second_start_finds_the_running_one(tmp_path, capsys):
    state = tmp_path / "child.json"
    assert main_action("start", state, Child) == 0
    info = json.loads(state.read_text())
    try:
        assert capsys.readouterr().out.strip() == info["address"] == f"child-{info['pid']}"
        assert main_action("start", state, Child) == 0
        assert capsys.readouterr().out.strip() == info["address"]  # not a second child
        assert info["log"].endswith("child.log") and Path(info["data_dir"]).is_dir()
    finally:
        main_action("stop", state, Child)


def test_stop_from_another_process_stops_the_recorded_child(tmp_path):
    state = tmp_path / "child.json"
    child = Child().start()
    StateFile(state).record(child)
    stop = [sys.executable, "-m", "consumer.devtools.local_kafka", "stop", "--state", str(state)]
    result = subprocess.run(stop, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "stopped", result.stderr
    assert child.process is not None and child.process.wait(5) == -signal.SIGTERM
    assert not state.exists() and child.data_dir is not None and not child.data_dir.exists()


def test_stop_kills_a_recorded_child_that_ignores_sigterm(tmp_path):
    state = StateFile(tmp_path / "child.json")
    child = Child(script=STUBBORN).start()
    state.record(child)
    assert state.stop(timeout=0.5)
    assert child.process is not None and child.process.wait(5) == -signal.SIGKILL


def test_a_record_whose_pid_now_names_another_process_is_stale(tmp_path, capsys):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    state = tmp_path / "child.json"
    stale_dir = tmp_path / "stale"
    # The recorded child is gone and its pid was reused: the start time tells them apart.
    record = {"pid": other.pid, "started": "1", "address": "child-old", "data_dir": str(stale_dir), "log": "x"}
    try:
        stale_dir.mkdir()
        state.write_text(json.dumps(record))
        assert main_action("stop", state, Child) == 0
        assert other.poll() is None, "stop killed a process that is not the recorded one"
        assert not state.exists() and not stale_dir.exists()
        capsys.readouterr()

        stale_dir.mkdir()
        state.write_text(json.dumps(record))
        assert main_action("start", state, Child) == 0  # a new child, not the stale address
        assert capsys.readouterr().out.strip() == json.loads(state.read_text())["address"] != "child-old"
        assert not stale_dir.exists()
        assert other.poll() is None
    finally:
        main_action("stop", state, Child)
        other.kill()
        other.wait()


def test_a_record_without_a_start_time_goes_by_the_pid(tmp_path):
    # State files written before start times were recorded (a registry that is running now).
    child = Child().start()
    try:
        assert child.process is not None
        assert StateFile.alive({"pid": child.process.pid, "data_dir": str(child.data_dir)})
        child.stop()
        assert not StateFile.alive({"pid": child.process.pid, "data_dir": str(child.data_dir)})
    finally:
        child.cleanup()


def test_stop_without_a_record_says_so(tmp_path, capsys):
    assert main_action("stop", tmp_path / "none.json", Child) == 0
    assert "nothing is recorded as running" in capsys.readouterr().err


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_run_stops_its_child_and_removes_the_folder_when_it_is_told_to_stop(tmp_path, stop_signal):
    # The foreground command: Ctrl-C, a closed terminal or a process manager's SIGTERM must not
    # leave the child running on its own (it is in a session of its own: the signal reaches the
    # runner only).
    code = (
        "import signal, sys; from pathlib import Path; from tests.unit.test_supervisor import Child; "
        "from consumer.devtools.supervisor import main_action; "
        "signal.signal(signal.SIGINT, signal.default_int_handler); "  # a background job ignores SIGINT
        "sys.exit(main_action('run', Path(sys.argv[1]), Child))"
    )
    runner = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "unused.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child_pid = 0
    try:
        assert runner.stdout is not None and runner.stderr is not None
        child_pid = int(runner.stdout.readline().strip().removeprefix("child-"))
        folder = Path(runner.stderr.readline().split()[1]).parent
        runner.send_signal(stop_signal)
        assert runner.wait(10) == 0
        assert supervisor._start_time(child_pid) is None, "the child was left running"
        assert not folder.exists()
    finally:
        runner.kill()
        runner.wait()
        if child_pid and supervisor._start_time(child_pid) is not None:
            os.kill(child_pid, signal.SIGKILL)


def test_a_start_command_told_to_stop_while_it_waits_leaves_no_process(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    code = (
        "import sys; from pathlib import Path; from tests.unit.test_supervisor import Child; "
        "from consumer.devtools.supervisor import main_action\n"
        "class Slow(Child):\n"
        "    def __init__(self):\n"
        "        super().__init__(data_dir=Path(sys.argv[2]), script=sys.argv[3])\n"
        "sys.exit(main_action('start', Path(sys.argv[1]), Slow))"
    )
    never_ready = "import os, pathlib, time; pathlib.Path('pid').write_text(str(os.getpid())); time.sleep(30)"
    state = tmp_path / "state.json"
    runner = subprocess.Popen([sys.executable, "-c", code, str(state), str(folder), never_ready], text=True)
    child_pid = 0
    try:
        deadline = time.monotonic() + 20
        while not (folder / "pid").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        child_pid = int((folder / "pid").read_text())
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(10) == 130
        assert supervisor._start_time(child_pid) is None, "the child was left running"
        assert not state.exists()
    finally:
        runner.kill()
        runner.wait()
        if child_pid and supervisor._start_time(child_pid) is not None:
            os.kill(child_pid, signal.SIGKILL)
