"""The opt-out propagation scenario, measured during the service's latency runs: opt-outs of users the
input never mentions, offered at a steady rate while the service is under load, and the p50 and p99
of the service's own propagation histogram (an opt-out's timestamp to its being applied) afterwards.

Result: `latency.training_filter.optout_propagation`. Likewise content changes of record ids the input
never has (`ChangeOffer`) and their retractions read back (`retraction_latency`): a change's send time
to its retraction's (`latency.training_filter.change_to_retraction`).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from consumer.wire.codec import CONTENT_CHANGE, OPTOUT, REVOCATION, Codec


class OptOutOffer:
    """Opt-outs of users the input never mentions, at a steady rate, on a thread, while a latency run
    loads the service: the service's propagation histogram then describes them alone."""

    def __init__(self, bootstrap: str, topic: str, per_second: float) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "log_level": 3})
        self.topic = topic
        self.interval = 1 / per_second
        self.sent = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        codec = Codec()
        while not self.stopping.wait(self.interval):
            user = f"bench-late-{uuid.uuid4().hex}".encode()
            now = dt.datetime.now(dt.UTC)
            value = codec.encode(OPTOUT, {"user_id": user.decode(), "opted_out_at": now, "source": "settings"})
            self.producer.produce(self.topic, value, user)
            self.producer.poll(0)
            self.sent += 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.producer.flush(10)


def propagation_quantiles(metrics_text: str, sent: int) -> dict[str, float]:
    """p50 and p99 of the service's opt-out propagation histogram, interpolated within buckets as
    Prometheus's histogram_quantile does."""
    buckets: list[tuple[float, float]] = []
    count = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "training_filter_optout_propagation_seconds_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == "training_filter_optout_propagation_seconds_count":
                count = sample.value
    buckets.sort()

    def quantile(q: float) -> float:
        if count == 0:
            return float("nan")
        rank = q * count
        lower, below = 0.0, 0.0
        for upper, cumulative in buckets:
            if cumulative >= rank:
                if upper == float("inf"):
                    return lower * 1000
                share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
                return (lower + (upper - lower) * share) * 1000
            lower, below = upper, cumulative
        return float("nan")

    return {"optouts_sent": sent, "optouts_applied": count, "p50_ms": quantile(0.5), "p99_ms": quantile(0.99)}


class ChangeOffer:
    """Content changes (DELETED) of record ids the input never has, at a steady rate, on a thread, while
    a latency run loads the service; `retraction_latency` then reads their retractions back. Each
    change's `at` is its send time, which the retraction carries as `opted_out_at`."""

    def __init__(self, bootstrap: str, topic: str, per_second: float) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "log_level": 3})
        self.topic = topic
        self.interval = 1 / per_second
        self.ids: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        codec = Codec()
        while not self.stopping.wait(self.interval):
            record_id = f"bench-gone-{uuid.uuid4().hex}"
            change = {
                "record_id": record_id,
                "user_id": f"bench-user-{uuid.uuid4().hex}",
                "change": "DELETED",
                "at": dt.datetime.now(dt.UTC),
                "source": "bench",
            }
            self.producer.produce(self.topic, codec.encode(CONTENT_CHANGE, change), record_id.encode())
            self.producer.poll(0)
            self.ids.add(record_id)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.producer.flush(10)


def retraction_latency(
    bootstrap: str, revocations_topic: str, ids: set[str], timeout: float = 30.0
) -> dict[str, float]:
    """From each offered change's send time to its retraction's produce time (the emitter's producer
    stamps it): p50, p99 and max in ms, over the retractions read back within `timeout`."""
    from tests.harness import read_all

    codec = Codec()
    deadline = time.monotonic() + timeout
    found: dict[str, float] = {}
    while time.monotonic() < deadline and len(found) < len(ids):
        for m in read_all(bootstrap, revocations_topic, timeout=5):
            key = m.key() or b""
            if not key.startswith(b"content/bench-gone-"):
                continue
            r = codec.decode_own(m.value(), REVOCATION)
            if r["record_id"] in ids:
                sent = r["opted_out_at"].timestamp() * 1000
                found[r["record_id"]] = m.timestamp()[1] - sent
    values = sorted(found.values())
    if not values:
        nan = float("nan")
        return {"changes_sent": len(ids), "retracted": 0, "p50_ms": nan, "p99_ms": nan, "max_ms": nan}
    return {
        "changes_sent": len(ids),
        "retracted": len(values),
        "p50_ms": values[len(values) // 2],
        "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))],
        "max_ms": values[-1],
    }
