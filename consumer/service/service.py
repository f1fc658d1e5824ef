"""`training-filter run`, top to bottom: the probes answer first; every part is built (assemble.py); the
feeds catch up before any input (lifecycle.py); the input is subscribed; the loop turns (loop.py) and
each turn is accounted for (upkeep.py) until a stop is asked for; then shutdown. The exit code says
how it ended: 0 a clean stop, 2 a configuration error, 1 anything else.

No state is shared across threads except the few numbers the HTTP probes read (`state`).
"""

from __future__ import annotations

import signal
import traceback
from typing import Any

from consumer import __version__
from consumer.audit.exporter import service_exporter
from consumer.datapath.delivery import FatalDeliveryError
from consumer.feeds.ends import FeedError
from consumer.operations import logs
from consumer.operations.clients import Clients, KafkaClients
from consumer.operations.health import HealthServer
from consumer.operations.metrics import Metrics
from consumer.operations.settings import ConfigError, Settings
from consumer.service import lifecycle
from consumer.service.assemble import assemble
from consumer.service.client_configs import check_overrides
from consumer.service.loop import Loop
from consumer.service.parts import Parts
from consumer.service.probes import Probes
from consumer.service.state import State
from consumer.service.upkeep import Upkeep
from consumer.wire import fastpath


class Service:
    def __init__(self, settings: Settings, clients: Clients | None = None, log: Any = None) -> None:
        check_overrides(settings)
        self.settings = settings
        self.clients = clients if clients is not None else KafkaClients()
        self.log = log if log is not None else logs.get("training_filter")
        self.metrics = Metrics()
        self.state = State()
        self.probes = Probes(settings, self.state)
        self.metrics.info.labels(
            __version__,
            settings.policy.version,
            settings.processing_guarantee,
            "compiled" if fastpath.COMPILED else "interpreted",
        ).set(1)

    def run(self, install_signals: bool = True) -> int:
        if install_signals:
            signal.signal(signal.SIGTERM, self.state.request_stop)
            signal.signal(signal.SIGINT, self.state.request_stop)
        health = self._serve_probes()
        if health is None:
            return 2
        parts: Parts | None = None
        recipients = None
        try:
            parts = assemble(self.settings, self.clients, self.state, self.metrics, self.log)
            # The record of recipients (docs/recipients.md): beside the data path, never in its way.
            # Started once every client of the service is made: librdkafka clients made on two threads
            # at once over TLS crashed the process (SIGSEGV) in the security tests.
            recipients = service_exporter(self.settings, self.clients, self.metrics, self.log, parts.codec)
            if recipients is not None:
                recipients.start()
            lifecycle.catch_up(parts)
            if not self.state.stopping:
                lifecycle.subscribe(parts)
                self._turn(parts)
        except ConfigError as exc:
            self.log.error("invalid_configuration", error=str(exc))
            self.state.exit_code = 2
        except FatalDeliveryError as exc:
            self.log.error("fatal_delivery_error", error=str(exc))
            self.state.exit_code = 1
        except FeedError as exc:
            if self.state.stopping:  # SIGTERM while start-up waited for the broker: a clean stop
                self.log.info("stopped_during_start_up", error=str(exc))
            else:
                self.log.error("feed_unavailable", error=str(exc))  # the error names the topic
                self.state.exit_code = 1
        except Exception as exc:
            # The frames only: an exception's message could quote a value from a record.
            self.log.error("crashed", error=type(exc).__name__, frames=traceback.format_tb(exc.__traceback__))
            self.state.exit_code = 1
        finally:
            lifecycle.shutdown(parts, self.state, self.settings, self.log)
            if recipients is not None:
                recipients.stop(timeout=1.0)
            health.stop()
        return self.state.exit_code

    def _serve_probes(self) -> HealthServer | None:
        s = self.settings
        try:
            health = HealthServer(
                s.metrics_host, s.metrics_port, self.metrics.registry, self.probes.healthy, self.probes.ready
            )
        except OSError as exc:  # preflight listened there, but another process took the port since
            self.log.error("invalid_configuration", error=f"TF_METRICS_PORT={s.metrics_port}: {exc.strerror or exc}")
            return None
        health.start()
        self.log.info(
            "starting",
            version=__version__,
            policy_version=s.policy.version,
            shadow_policy_version=s.shadow_policy.version if s.shadow_policy is not None else None,
            guarantee=s.processing_guarantee,
            metrics_port=health.port,
            fast_path="compiled" if fastpath.COMPILED else "interpreted",
        )
        return health

    def _turn(self, parts: Parts) -> None:
        """The loop, until a stop is asked for: each turn's outcome accounted for in one place."""
        loop, upkeep = Loop(parts), Upkeep(parts, self.probes)
        parts.syncer.start()
        while not self.state.stopping:
            upkeep.account(loop.turn())
