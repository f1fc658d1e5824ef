"""A real, single-node Apache Kafka (KRaft) on 127.0.0.1 for development, the demo and the tests.

No Docker: the broker jars come from Maven Central (deploy/local-kafka/pom.xml, cached in ~/.m2 and
in a jar folder under ~/.cache), the storage is formatted with `kafka.tools.StorageTool format
--standalone`, and `kafka.Kafka` runs on free loopback ports with its data in a temporary folder. The
process itself (its folder and log, readiness, stopping, the state file of the commands) is
`consumer.devtools.supervisor`'s; this module only knows Kafka.

    python -m consumer.devtools.local_kafka start   # prints the bootstrap address, leaves the broker running
    python -m consumer.devtools.local_kafka stop
    python -m consumer.devtools.local_kafka run     # in the foreground until Ctrl-C
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

from consumer.devtools.supervisor import (
    CACHE_DIR,
    Supervised,
    SupervisedError,
    find_java,
    free_port,
    free_ports,
    main_action,
)

__all__ = ["CACHE_DIR", "DEFAULT_POM", "DEFAULT_STATE", "LocalKafka", "LocalKafkaError", "ensure_jars", "free_port"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POM = REPO_ROOT / "deploy" / "local-kafka" / "pom.xml"
DEFAULT_STATE = CACHE_DIR / "local-kafka.json"
FORMAT_TIMEOUT = 120.0  # seconds for the storage tool (a JVM start and a few files: about 2 s)

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

_SINGLE_NODE = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "num.partitions": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "5",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "5",
    "share.coordinator.state.topic.replication.factor": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
    # A test broker's data is thrown away: leave flushing to the OS page cache.
    "log.flush.interval.messages": str(2**62),
}


class LocalKafkaError(SupervisedError):
    """The local broker could not be fetched, formatted or started. The message says why."""


def _cluster_id() -> str:
    """A random Kafka cluster id (URL-safe base64 of a UUID). Like Kafka's own Uuid.randomUuid, never
    one that starts with '-': the storage tool would read it as an option and refuse to format."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


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


@dataclass
class LocalKafka(Supervised):
    """One broker process. `start()` formats a fresh data folder the first time only, so `stop()`
    then `start()` is a broker restart on the same data and ports (used by the fault tests)."""

    what: ClassVar[str] = "the broker"
    log_name: ClassVar[str] = "broker.log"
    dir_prefix: ClassVar[str] = "tf-kafka-"
    error: ClassVar[type[SupervisedError]] = LocalKafkaError
    stop_timeout: ClassVar[float] = 30.0  # a controlled shutdown moves leadership and flushes: seconds
    address_key: ClassVar[str] = "bootstrap"

    port: int = 0
    controller_port: int = 0
    heap: str = "512m"
    extra_properties: dict[str, str] = field(default_factory=dict)  # server.properties, over everything else
    listeners: dict[str, str] = field(default_factory=dict)  # name -> security protocol, for extra listeners
    listener_ports: dict[str, int] = field(default_factory=dict)
    # An extra listener advertised at another port than it binds (a proxy in front of it, e.g. one
    # that adds latency): every connection of a client that bootstraps there goes through the proxy.
    advertised_ports: dict[str, int] = field(default_factory=dict)
    cpus: set[int] | None = None  # pin the broker (every JVM thread) to these CPUs, for benchmarks
    scram_users: dict[str, str] = field(default_factory=dict)  # created at format time (SCRAM-SHA-256)
    secure: bool = False  # add a SASL_SSL listener (SCRAM-SHA-256 over TLS) and enforce ACLs on it

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return self.bootstrap

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

    def start(self, timeout: float = 90.0) -> Self:
        if self.running:
            return self
        jars = ensure_jars(Path(os.environ.get("TF_LOCAL_KAFKA_POM", DEFAULT_POM)))
        folder = self._folder()
        self._pick_ports()
        if self.secure:
            self._tls_material()
        config = folder / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self._properties().items()))
        (folder / "log4j2.properties").write_text(_LOG4J)
        java = [find_java(self.error, self.what), *self._jvm_options(), "-cp", f"{jars}/*"]
        if not (folder / "logs" / "meta.properties").exists():
            self._format(java, config)
        cpus = self.cpus
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self._spawn([*java, "kafka.Kafka", str(config)], self._answers(), timeout, preexec_fn=pin)
        return self

    def _pick_ports(self) -> None:
        """Free ports for whatever has none yet; a restart keeps the ports it had."""
        if self.secure:
            self.listeners.setdefault("SASL_SSL", "SASL_SSL")
        unset = [name for name in self.listeners if name not in self.listener_ports]
        # Not one of the advertised ports either: a proxy binds those after the broker has started.
        promised = {self.port, self.controller_port, *self.listener_ports.values(), *self.advertised_ports.values()}
        ports = iter(free_ports(2 + len(unset), exclude=promised - {0}))
        self.port = self.port or next(ports)
        self.controller_port = self.controller_port or next(ports)
        for name in unset:
            self.listener_ports[name] = next(ports)

    def _properties(self) -> dict[str, str]:
        assert self.data_dir is not None
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}", f"CONTROLLER://127.0.0.1:{self.controller_port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
        for name, protocol in self.listeners.items():
            port = self.listener_ports[name]
            listeners.append(f"{name}://127.0.0.1:{port}")
            advertised.append(f"{name}://127.0.0.1:{self.advertised_ports.get(name, port)}")
            protocols.append(f"{name}:{protocol}")
        return {
            **_SINGLE_NODE,
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(self.data_dir / "logs"),
            **(self._secure_properties() if self.secure else {}),
            **self.extra_properties,
        }

    def _secure_properties(self) -> dict[str, str]:
        assert self.data_dir is not None
        return {
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

    def _tls_material(self) -> None:
        """A self-signed certificate for 127.0.0.1 made with the JDK's keytool (no other tools needed)."""
        assert self.data_dir is not None
        store = self.data_dir / "broker.p12"
        if store.exists():
            return
        keytool = shutil.which("keytool") or str(Path(find_java(self.error, self.what)).with_name("keytool"))
        common = ["-storetype", "PKCS12", "-storepass", _STORE_PASSWORD, "-keystore", str(store)]
        generate = ["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "7"]
        generate += ["-dname", "CN=localhost", "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-keypass", _STORE_PASSWORD]
        for args in (generate, ["-exportcert", "-alias", "broker", "-rfc", "-file", str(self.ca_path)]):
            result = subprocess.run([keytool, *args, *common], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise LocalKafkaError(f"keytool failed: {result.stderr or result.stdout}")

    def _jvm_options(self) -> list[str]:
        assert self.data_dir is not None
        return [
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
        ]

    def _format(self, java: list[str], config: Path) -> None:
        """Formats the storage of a new folder (a new cluster id), with the SCRAM users in it."""
        cmd = [*java, "kafka.tools.StorageTool", "format", "--standalone", "-t", _cluster_id(), "-c", str(config)]
        for user, password in self.scram_users.items():
            cmd += ["--add-scram", f"SCRAM-SHA-256=[name={user},password={password}]"]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=FORMAT_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise LocalKafkaError(f"formatting the broker storage took over {FORMAT_TIMEOUT:.0f}s") from None
        if result.returncode != 0:
            raise LocalKafkaError(f"formatting the broker storage failed:\n{result.stdout}\n{result.stderr}")

    def _answers(self) -> Callable[[], bool]:
        """The readiness probe: the broker answers a metadata request and lists itself."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})

        def probe() -> bool:
            try:
                return bool(admin.list_topics(timeout=2).brokers)
            except Exception:  # KafkaException while the broker is still coming up
                return False

        return probe


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
        return main_action(args.action, args.state, LocalKafka)
    except SupervisedError as exc:
        print(f"local-kafka: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
