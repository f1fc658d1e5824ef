"""The record of recipients as metrics: the running service scans the recipients on a thread of its
own every TF_RECIPIENTS_INTERVAL_SECONDS (the first scan once start-up has made its clients) and sets the recipients'
gauges, labelled by consumer group only. A group that is gone at a scan loses its series. A failed
scan never touches the data path: it is logged and counted, the last figures stay, and the next
scan tries again (the alert rules watch the figures, docs/recipients.md).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from consumer.audit.acknowledgements import Recipient
from consumer.audit.recipients_record import RecipientsRecorder
from consumer.operations.clients import Clients
from consumer.operations.metrics import Metrics
from consumer.operations.settings import Settings
from consumer.wire.codec import Codec


class Scanner(Protocol):
    def open(self) -> None: ...

    def scan(self) -> list[Recipient]: ...

    def close(self) -> None: ...


class RecipientsExporter:
    def __init__(
        self,
        scanner: Scanner,
        metrics: Metrics,
        log: Any,
        interval: float,
        clock: Callable[[], float] = time.time,
        recorder: RecipientsRecorder | None = None,
    ) -> None:
        self.scanner = scanner
        self.recorder = recorder  # with an audit key: each scan also kept on the audit topic
        self.metrics = metrics
        self.log = log
        self.interval = interval
        self.clock = clock
        self.scans = 0  # completed scans, failed or not (tests wait on it)
        self._groups: set[str] = set()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="recipients", daemon=True)

    def start(self) -> None:
        """Makes the scanner's clients on the calling thread (see RecipientScan.open), then scans on
        a thread of its own. Clients that cannot be made are a failed scan, tried again at the next."""
        try:
            self.scanner.open()
        except Exception as exc:
            self.log.warning("recipients_scan_failed", error=type(exc).__name__)
            self.metrics.recipient_scans_failed.inc()
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
        if not self.thread.is_alive():  # a scan stuck past the timeout keeps its clients; a daemon
            self.scanner.close()
            if self.recorder is not None:
                self.recorder.close(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.scan_once()
            self._stop.wait(self.interval)

    def scan_once(self) -> bool:
        """One scan published; False when it failed (logged, counted)."""
        try:
            recipients = self.scanner.scan()
        except Exception as exc:
            # ScanError says the request and the error code; anything else, its type only: a
            # message could quote what it was given.
            error = str(exc) if type(exc).__name__ == "ScanError" else type(exc).__name__
            self.log.warning("recipients_scan_failed", error=error)
            self.metrics.recipient_scans_failed.inc()
            self.scans += 1
            return False
        now_ms = int(self.clock() * 1000)
        self.publish(recipients, now_ms)
        if self.recorder is not None:
            try:
                self.recorder.record(recipients, now_ms)
            except Exception as exc:  # the metrics are published; the record is tried again at the next scan
                self.log.warning("recipients_record_failed", error=type(exc).__name__)
                self.metrics.recipient_scans_failed.inc()
        self.scans += 1
        return True

    def publish(self, recipients: list[Recipient], now_ms: int) -> None:
        m = self.metrics
        seen = {r.group for r in recipients}
        for group in self._groups - seen:
            for gauge in (m.recipient_reads_revocations, m.recipient_unacknowledged, m.recipient_oldest_seconds):
                with contextlib.suppress(KeyError):
                    gauge.remove(group)
        for r in recipients:
            m.recipient_reads_revocations.labels(r.group).set(1 if r.reads_revocations else 0)
            m.recipient_unacknowledged.labels(r.group).set(r.unacknowledged)
            m.recipient_oldest_seconds.labels(r.group).set(r.oldest_seconds(now_ms))
        m.recipients.set(len(recipients))
        self._groups = seen
        behind = sum(1 for r in recipients if r.unacknowledged)
        self.log.debug("recipients_scanned", recipients=len(recipients), behind=behind)


def service_exporter(
    settings: Settings, clients: Clients, metrics: Metrics, log: Any, codec: Codec | None = None
) -> RecipientsExporter | None:
    """The running service's exporter, from its settings (None with TF_RECIPIENTS_INTERVAL_SECONDS=0).
    Its clients connect at the first scan, so a broker that cannot be reached is a failed scan."""
    from consumer.audit.recipients import RecipientScan, Topics
    from consumer.operations import logs

    s = settings
    if s.recipients_interval_seconds <= 0:
        return None
    topics = Topics(training=s.training_topic, revocations=s.revocations_topic, own_group=s.group_id)
    config = s.consumer_config(logger=logs.kafka_logger())
    timeout = min(10.0, s.recipients_interval_seconds)
    recorder = None
    if s.audit_key is not None and codec is not None:  # kept over time on the audit topic, for the effectiveness report
        producer = clients.producer(
            s.producer_config(**{"enable.idempotence": True, "acks": "all"}, logger=logs.kafka_logger())
        )
        recorder = RecipientsRecorder(producer, codec, s.audit_key, s.audit_topic)
    return RecipientsExporter(
        RecipientScan(clients, config, topics, timeout), metrics, log, s.recipients_interval_seconds, recorder=recorder
    )
