"""A real, single-node Apache Kafka (KRaft) on 127.0.0.1 for development, the demo and the tests.

No Docker: the broker jars come from Maven Central (deploy/local-kafka/pom.xml, cached in ~/.m2 and
in a jar folder under ~/.cache), the storage is formatted with `kafka.tools.StorageTool format
--standalone`, and `kafka.Kafka` runs on free loopback ports with its data in a temporary folder.

    python -m consumer.devtools.local_kafka start   # prints the bootstrap address, leaves the broker running
    python -m consumer.devtools.local_kafka stop
    python -m consumer.devtools.local_kafka run     # in the foreground until Ctrl-C
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POM = REPO_ROOT / "deploy" / "local-kafka" / "pom.xml"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "training-filter"
DEFAULT_STATE = CACHE_DIR / "local-kafka.json"

_STORE_PASSWORD = "local-kafka-test-only"  # a throw-away store for a loopback test broker
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"

_LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class LocalKafkaError(RuntimeError):
    """The local broker could not be fetched, formatted or started. The message says why."""


def _cluster_id() -> str:
    """A random Kafka cluster id (URL-safe base64 of a UUID). Like Kafka's own Uuid.randomUuid, never
    one that starts with '-': the storage tool would read it as an option and refuse to format."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_jars(pom: Path = DEFAULT_POM) -> Path:
    """The folder of broker jars, fetched by Maven on first use (then cached)."""
    if not pom.is_file():
        raise LocalKafkaError(f"{pom} not found: run from a checkout of training-filter or set TF_LOCAL_KAFKA_POM")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    jars = CACHE_DIR / f"kafka-jars-{digest}"
    if (jars / ".complete").is_file():
        return jars
    if shutil.which("mvn") is None:
        raise LocalKafkaError("Maven (mvn) is not on PATH: it fetches the Kafka jars from Maven Central")
    partial = jars.with_name(jars.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={partial}"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalKafkaError(f"fetching the Kafka jars failed ({' '.join(cmd)}):\n{result.stdout}\n{result.stderr}")
    (partial / ".complete").write_text("ok\n")
    shutil.rmtree(jars, ignore_errors=True)
    partial.rename(jars)
    return jars


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java:
        raise LocalKafkaError("java is not on PATH (Java 17 or newer is needed to run the broker)")
    return java


@dataclass
class LocalKafka:
    """One broker process. `start()` formats a fresh data folder the first time only, so `stop()`
    then `start()` is a broker restart on the same data (used by the fault tests)."""

    data_dir: Path | None = None
    port: int = 0
    controller_port: int = 0
    heap: str = "512m"
    extra_properties: dict[str, str] = field(default_factory=dict)
    listeners: dict[str, str] = field(default_factory=dict)  # name -> security protocol, for extra listeners
    listener_ports: dict[str, int] = field(default_factory=dict)
    # An extra listener advertised at another port than it binds (a proxy in front of it, e.g. one
    # that adds latency): every connection of a client that bootstraps there goes through the proxy.
    advertised_ports: dict[str, int] = field(default_factory=dict)
    cpus: set[int] | None = None  # pin the broker (every JVM thread) to these CPUs, for benchmarks
    scram_users: dict[str, str] = field(default_factory=dict)  # created at format time (SCRAM-SHA-256)
    secure: bool = False  # add a SASL_SSL listener (SCRAM-SHA-256 over TLS) and enforce ACLs on it
    process: subprocess.Popen[bytes] | None = None
    _owns_dir: bool = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def listener_bootstrap(self, name: str) -> str:
        """The address a client bootstraps at for the listener (its advertised one)."""
        return f"127.0.0.1:{self.advertised_ports.get(name, self.listener_ports[name])}"

    @property
    def secure_bootstrap(self) -> str:
        return self.listener_bootstrap("SASL_SSL")

    @property
    def ca_path(self) -> Path:
        """The broker's self-signed certificate (PEM): the CA a TLS client must trust."""
        assert self.data_dir is not None
        return self.data_dir / "ca.pem"

    def _tls_material(self) -> None:
        """A self-signed certificate for 127.0.0.1 made with the JDK's keytool (no other tools needed)."""
        assert self.data_dir is not None
        store = self.data_dir / "broker.p12"
        if store.exists():
            return
        keytool = shutil.which("keytool") or str(Path(_java()).with_name("keytool"))
        common = ["-storetype", "PKCS12", "-storepass", _STORE_PASSWORD, "-keystore", str(store)]
        for args in (
            [
                "-genkeypair",
                "-alias",
                "broker",
                "-keyalg",
                "RSA",
                "-keysize",
                "2048",
                "-validity",
                "7",
                "-dname",
                "CN=localhost",
                "-ext",
                "SAN=ip:127.0.0.1,dns:localhost",
                "-keypass",
                _STORE_PASSWORD,
            ],
            ["-exportcert", "-alias", "broker", "-rfc", "-file", str(self.ca_path)],
        ):
            result = subprocess.run([keytool, *args, *common], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise LocalKafkaError(f"keytool failed: {result.stderr or result.stdout}")

    @property
    def log_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "broker.log"

    def _properties(self) -> str:
        assert self.data_dir is not None
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}", f"CONTROLLER://127.0.0.1:{self.controller_port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
        for name, protocol in self.listeners.items():
            port = self.listener_ports[name]
            listeners.append(f"{name}://127.0.0.1:{port}")
            advertised.append(f"{name}://127.0.0.1:{self.advertised_ports.get(name, port)}")
            protocols.append(f"{name}:{protocol}")
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.flush.interval.messages": str(2**62),
        }
        props.update(self.extra_properties)
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def start(self, timeout: float = 90.0) -> LocalKafka:
        if self.process is not None and self.process.poll() is None:
            return self
        jars = ensure_jars(Path(os.environ.get("TF_LOCAL_KAFKA_POM", DEFAULT_POM)))
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="tf-kafka-"))
            self._owns_dir = True
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        if self.secure:
            self.listeners.setdefault("SASL_SSL", "SASL_SSL")
            self._tls_material()
            self.extra_properties.update(
                {
                    "sasl.enabled.mechanisms": "SCRAM-SHA-256",
                    "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": _SCRAM_LOGIN,
                    "listener.name.sasl_ssl.ssl.keystore.location": str(self.data_dir / "broker.p12"),
                    "listener.name.sasl_ssl.ssl.keystore.password": _STORE_PASSWORD,
                    "listener.name.sasl_ssl.ssl.keystore.type": "PKCS12",
                    "listener.name.sasl_ssl.ssl.key.password": _STORE_PASSWORD,
                    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                    # The loopback PLAINTEXT listeners (controller, inter-broker, test tooling) stay trusted.
                    "super.users": "User:ANONYMOUS",
                    "allow.everyone.if.no.acl.found": "false",
                }
            )
        for name in self.listeners:
            self.listener_ports.setdefault(name, free_port())
        config = self.data_dir / "server.properties"
        config.write_text(self._properties())
        (self.data_dir / "log4j2.properties").write_text(_LOG4J)
        java = _java()
        classpath = f"{jars}/*"
        jvm = [
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
        ]
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = _cluster_id()
            fmt = [
                java,
                *jvm,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(config),
                *self._format_extra(),
            ]
            result = subprocess.run(fmt, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise LocalKafkaError(f"formatting the broker storage failed:\n{result.stdout}\n{result.stderr}")
        log = self.log_path.open("ab")
        cpus = self.cpus
        self.process = subprocess.Popen(
            [java, *jvm, "-cp", classpath, "kafka.Kafka", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _format_extra(self) -> list[str]:
        extra: list[str] = []
        for user, password in self.scram_users.items():
            extra += ["--add-scram", f"SCRAM-SHA-256=[name={user},password={password}]"]
        return extra

    def _wait_ready(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise LocalKafkaError(f"the broker exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                metadata = admin.list_topics(timeout=2)
                if metadata.brokers:
                    return
            except Exception:  # KafkaException while the broker is still coming up
                time.sleep(0.2)
        self.stop()
        raise LocalKafkaError(f"the broker did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM), then SIGKILL if it does not exit within `timeout`."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        if self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


# -- command line: a broker that outlives the command, tracked by a state file --------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_start(state: Path) -> int:
    if state.is_file():
        info = json.loads(state.read_text())
        if _pid_alive(info["pid"]):
            print(info["bootstrap"])
            return 0
    broker = LocalKafka().start()
    assert broker.process is not None
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(
        json.dumps(
            {
                "pid": broker.process.pid,
                "bootstrap": broker.bootstrap,
                "data_dir": str(broker.data_dir),
                "log": str(broker.log_path),
            }
        )
    )
    print(broker.bootstrap)
    print(f"broker log: {broker.log_path}", file=sys.stderr)
    return 0


def cmd_stop(state: Path, timeout: float = 30.0) -> int:
    if not state.is_file():
        print("no local broker is recorded as running", file=sys.stderr)
        return 0
    info = json.loads(state.read_text())
    pid = int(info["pid"])
    if _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(info["data_dir"], ignore_errors=True)
    state.unlink()
    print("stopped")
    return 0


def cmd_run() -> int:
    with LocalKafka() as broker:
        print(broker.bootstrap, flush=True)
        print(f"broker log: {broker.log_path} (Ctrl-C stops it)", file=sys.stderr, flush=True)
        try:
            while broker.process is not None and broker.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="local-kafka", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["start", "stop", "run", "fetch"])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="where start records the running broker")
    args = parser.parse_args(argv)
    try:
        if args.action == "fetch":
            print(ensure_jars())
            return 0
        if args.action == "start":
            return cmd_start(args.state)
        if args.action == "stop":
            return cmd_stop(args.state)
        return cmd_run()
    except LocalKafkaError as exc:
        print(f"local-kafka: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
