"""The local broker's launcher: its configuration, and its supervision with a fake `java` standing in
for the JVM (the broker itself is exercised by every integration test and the fault suite)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import pytest

from consumer.devtools import local_kafka
from consumer.devtools.local_kafka import LocalKafka, LocalKafkaError

# The storage tool "formats" at once; the broker itself runs the script's remainder.
FORMAT_THEN = 'case "$*" in *kafka.tools.StorageTool*) exit 0;; esac\n'


def test_local_kafka_cluster_ids_never_start_with_a_dash(monkeypatch):
    # 0xFB... encodes to a leading '-' in URL-safe base64; the next UUID does not.
    ids = iter([uuid.UUID(bytes=b"\xfb" + b"\x00" * 15), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(local_kafka.uuid, "uuid4", lambda: next(ids))
    assert not local_kafka._cluster_id().startswith("-")


def test_an_extra_listener_is_advertised_at_its_proxy_port(tmp_path):
    broker = LocalKafka(data_dir=tmp_path, listeners={"PROXIED": "PLAINTEXT"}, advertised_ports={"PROXIED": 40001})
    broker._pick_ports()
    props = broker._properties()
    bound = broker.listener_ports["PROXIED"]
    assert f"PROXIED://127.0.0.1:{bound}" in props["listeners"].split(",")
    assert "PROXIED://127.0.0.1:40001" in props["advertised.listeners"].split(",")
    assert "PROXIED:PLAINTEXT" in props["listener.security.protocol.map"].split(",")
    assert broker.listener_bootstrap("PROXIED") == "127.0.0.1:40001"
    # Distinct, and none is the proxy's port (the proxy binds it only once the broker is up).
    assert len({broker.port, broker.controller_port, bound, 40001}) == 4
    assert all(
        address.startswith(("PLAINTEXT://127.0.0.1:", "CONTROLLER://127.0.0.1:", "PROXIED://127.0.0.1:"))
        for address in props["listeners"].split(",")
    )


def test_a_restart_keeps_the_ports(tmp_path):
    broker = LocalKafka(data_dir=tmp_path, secure=True)
    broker._pick_ports()
    first = (broker.port, broker.controller_port, dict(broker.listener_ports))
    broker._pick_ports()
    assert (broker.port, broker.controller_port, broker.listener_ports) == first
    assert broker.secure_bootstrap == f"127.0.0.1:{broker.listener_ports['SASL_SSL']}"


def test_the_secure_listener_settings_and_extra_properties_over_them(tmp_path):
    broker = LocalKafka(data_dir=tmp_path, secure=True, extra_properties={"super.users": "User:admin"})
    broker._pick_ports()
    props = broker._properties()
    assert f"SASL_SSL://127.0.0.1:{broker.listener_ports['SASL_SSL']}" in props["listeners"]
    assert props["listener.name.sasl_ssl.ssl.keystore.location"] == str(tmp_path / "broker.p12")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin"
    assert broker.extra_properties == {"super.users": "User:admin"}  # the caller's dict is left as it was


def test_a_broker_that_exits_reports_the_tail_of_its_log(fake_java, tmp_path):
    fake_java(FORMAT_THEN + "echo 'broker: the port is in use'; exit 1")
    broker = LocalKafka(data_dir=tmp_path / "run")
    (tmp_path / "run").mkdir()
    with pytest.raises(LocalKafkaError) as failed:
        broker.start(timeout=30)
    message = str(failed.value)
    assert "the broker exited with 1;" in message and str(broker.log_path) in message
    assert "broker: the port is in use" in message


def test_a_failed_format_reports_the_storage_tools_words(fake_java, tmp_path):
    fake_java("echo 'Invalid cluster.id' >&2; exit 1")
    (tmp_path / "run").mkdir()
    with pytest.raises(LocalKafkaError, match=r"(?s)formatting the broker storage failed:.*Invalid cluster.id"):
        LocalKafka(data_dir=tmp_path / "run").start(timeout=30)


def test_ctrl_c_while_the_broker_starts_leaves_no_process(fake_java, tmp_path, monkeypatch):
    # Started in a session of its own, the broker does not get the terminal's SIGINT: the launcher
    # must stop it. Before the supervisor it ran on, unsupervised.
    fake_java(FORMAT_THEN + "exec sleep 30")
    real_sleep, sleeps = time.sleep, []

    def interrupted_once(seconds: float) -> None:
        if threading.current_thread() is not threading.main_thread():
            return real_sleep(seconds)  # another test's thread, if any: Ctrl-C reaches the main thread only
        if broker.process is None:
            # Not yet the broker: subprocess's own waits (the storage format, with a time-out) sleep too,
            # and an interrupt there would test the format, not the start (a race lost on a slow machine).
            return real_sleep(seconds)
        sleeps.append(seconds)
        if len(sleeps) == 1:
            raise KeyboardInterrupt
        return real_sleep(seconds)

    (tmp_path / "run").mkdir()
    broker = LocalKafka(data_dir=tmp_path / "run")
    monkeypatch.setattr(time, "sleep", interrupted_once)
    try:
        with pytest.raises(KeyboardInterrupt):
            broker.start(timeout=30)
        assert sleeps, "the start was never interrupted"
        assert broker.process is not None and broker.process.poll() is not None, "the broker was left running"
    finally:
        broker.cleanup()


def test_stop_does_not_kill_a_process_that_took_the_recorded_pid(tmp_path, capsys):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state = tmp_path / "local-kafka.json"
        record = {"pid": other.pid, "started": "1", "bootstrap": "127.0.0.1:1", "data_dir": str(tmp_path / "x")}
        state.write_text(json.dumps(record))
        assert local_kafka.main(["stop", "--state", str(state)]) == 0
        assert capsys.readouterr().out.strip() == "stopped"
        time.sleep(0.3)
        assert other.poll() is None, "stop killed a process that is not the broker"
        assert not state.exists()
    finally:
        other.kill()
        other.wait()
