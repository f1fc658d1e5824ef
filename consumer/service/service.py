"""`training-filter run`: builds the parts (`wiring`), gates start-up and handles rebalances and
shutdown (`lifecycle`), and turns the loop (`loop`), with the metrics server and the signals.

No state is shared across threads except the few numbers the HTTP probes read (`state`).
"""

from __future__ import annotations

import signal
import traceback
from typing import Any, cast

from consumer import __version__
from consumer.consents.feed import GatedFeeds
from consumer.datapath.delivery import FatalDeliveryError
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.operations import logs
from consumer.operations.health import HealthServer
from consumer.operations.metrics import Metrics
from consumer.operations.settings import ConfigError, Settings
from consumer.optouts.feed import FeedError, OptOutFeed
from consumer.service.lifecycle import Lifecycle
from consumer.service.loop import Loop
from consumer.service.state import State
from consumer.service.upkeep import Snapshots, Upkeep
from consumer.service.wiring import Wiring, check_overrides
from consumer.wire import fastpath
from consumer.wire.codec import Codec
from consumer.wire.registry import Registry
from rules import Decider


class Service:
    def __init__(self, settings: Settings) -> None:
        check_overrides(settings)
        self.settings = settings
        self.log = logs.get("training_filter")
        self.metrics = Metrics()
        self.state = State()
        registry = Registry(settings.registry) if settings.registry is not None else None
        self.codec = Codec(registry=registry, max_value_bytes=settings.max_value_bytes)
        self.decider = Decider(settings.policy)
        self.pseudonymiser = Pseudonymiser(settings.hmac_key)
        self.lifecycle = Lifecycle(settings, self.state, self.metrics, self.log)
        self.wiring = Wiring(settings, self.codec, self.pseudonymiser, self.metrics, self.log)
        self.health: HealthServer | None = None
        self.revocations: Any = None
        self.snapshots: Snapshots | None = None
        self.metrics.info.labels(
            __version__,
            settings.policy.version,
            settings.processing_guarantee,
            "compiled" if fastpath.COMPILED else "interpreted",
        ).set(1)

    def run(self, install_signals: bool = True) -> int:
        s, st, lifecycle = self.settings, self.state, self.lifecycle
        if install_signals:
            signal.signal(signal.SIGTERM, lifecycle.request_stop)
            signal.signal(signal.SIGINT, lifecycle.request_stop)
        try:
            self.health = HealthServer(
                s.metrics_host, s.metrics_port, self.metrics.registry, lifecycle.healthy, lifecycle.ready
            )
        except OSError as exc:  # preflight listened there, but another process took the port since
            self.log.error("invalid_configuration", error=f"TF_METRICS_PORT={s.metrics_port}: {exc.strerror or exc}")
            return 2
        self.health.start()
        self.log.info(
            "starting",
            version=__version__,
            policy_version=s.policy.version,
            shadow_policy_version=s.shadow_policy.version if s.shadow_policy is not None else None,
            guarantee=s.processing_guarantee,
            metrics_port=self.health.port,
            fast_path="compiled" if fastpath.COMPILED else "interpreted",
        )
        try:
            loop = self._build()
            lifecycle.catch_up()
            if not st.stopping:
                lifecycle.subscribe(self.revocations)
                loop.run()
        except ConfigError as exc:
            self.log.error("invalid_configuration", error=str(exc))
            st.exit_code = 2
        except FatalDeliveryError as exc:
            self.log.error("fatal_delivery_error", error=str(exc))
            st.exit_code = 1
        except FeedError as exc:
            if st.stopping:  # SIGTERM while start-up waited for the broker: a clean stop
                self.log.info("stopped_during_start_up", error=str(exc))
            else:
                # The opt-out or the consent feed: the error names the topic.
                self.log.error("feed_unavailable", error=str(exc))
                st.exit_code = 1
        except Exception as exc:
            # The frames only: an exception's message could quote a value from a record.
            self.log.error("crashed", error=type(exc).__name__, frames=traceback.format_tb(exc.__traceback__))
            st.exit_code = 1
        finally:
            lifecycle.shutdown(self.revocations, self.snapshots, self.health)
        return st.exit_code

    def _build(self) -> Loop:
        """Every part, in the order start-up needs them: the feed first (its catch-up gates input),
        the output schemas' ids and size limits before the producer, the consumer last."""
        w, lifecycle = self.wiring, self.lifecycle
        optouts = w.optout_feed(stopping=lambda: self.state.stopping)
        consents = w.consent_feed(lambda: self.state.stopping) if self.settings.consent_topic is not None else None
        # Under an opt-in policy both feeds gate input: caught up before it is consumed, synced before every
        # batch. When only the shadow candidate is opt-in, the consents are read but do not gate.
        feed = lifecycle.feed = (
            GatedFeeds(
                optouts,
                consents,
                gate=self.settings.policy.consent_model == "opt_in",
                log=self.log,
                sync_timeout=min(1.0, self.settings.optout_max_lag_seconds / 2),
            )
            if consents is not None
            else optouts
        )
        lifecycle.prepare_writes(self.codec)
        limits = w.output_limits()
        producer = w.producer(limits)
        consumer = lifecycle.input = w.input_consumer(lifecycle.on_stats)
        delivery = lifecycle.delivery = w.delivery(consumer, producer)
        processor = w.processor(
            self.decider, optouts.filter, producer, limits, consents.filter if consents is not None else None
        )
        self.revocations = w.revocation_emitter()
        self.snapshots = Snapshots(self.settings, feed, self.pseudonymiser, self.metrics, self.log, consents)
        upkeep = Upkeep(
            self.settings,
            self.state,
            self.metrics,
            self.log,
            delivery,
            processor,
            feed,
            self.snapshots,
            lifecycle.ready,
        )
        return Loop(
            self.settings,
            self.state,
            self.metrics,
            self.log,
            lifecycle,
            w,
            consumer,
            cast(OptOutFeed, feed),  # GatedFeeds answers everything the loop asks of the opt-out feed
            delivery,
            processor,
            self.revocations,
            upkeep,
        )
