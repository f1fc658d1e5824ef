"""The verifier's unit tests, on tests/fakes.py's in-memory Kafka: the in-process service decides a stream
and writes its training records, retractions and decision receipts (`decided`, with the audit key);
`verify` runs `training-filter audit verify` on the same Kafka with the same settings."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

from consumer.audit.receipts import RECEIPT
from consumer.commands.audit_verify import main_audit_verify
from consumer.operations.settings import Settings
from consumer.wire.codec import Codec
from tests.fakes import FakeKafka
from tests.service_fixture import AUDIT_KEY, HMAC_KEY, TOPICS, InProcessService, feed

POLICY = Path(__file__).resolve().parents[1] / "rules" / "policy.toml"
CODEC = Codec()


def env(**extra: str) -> dict[str, str]:
    return {
        **{var: name for var, (name, _) in TOPICS.items()},
        "TF_BOOTSTRAP_SERVERS": "fake-kafka:9092",
        "TF_HMAC_KEY": HMAC_KEY,
        "TF_METRICS_HOST": "127.0.0.1",
        "TF_METRICS_PORT": "0",
        "TF_OPTOUT_CAPACITY": "100000",
        "TF_BATCH_TIMEOUT_MS": "20",
        "TF_BATCH_MIN_WAIT_MS": "1",
        "TF_LOG_SUMMARY_SECONDS": "1",
        "TF_AUDIT_KEY": AUDIT_KEY,
        "TF_TRANSACTION_INTERVAL_MS": "50",
        **extra,
    }


def decided(kafka: FakeKafka, records: list[Any], s: Settings, retractions: int) -> None:
    """The service decides `records`, receipts them all, and writes at least `retractions` retractions."""
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        feed(kafka, records)
        svc.wait(lambda: receipted(kafka) >= len(records), what="every record receipted")
        svc.wait(lambda: len(kafka.records("revocations")) >= retractions, what="the retractions")


def receipted(kafka: FakeKafka) -> int:
    return sum(
        CODEC.decode_own(m.value(), RECEIPT)["records"]
        for m in kafka.records("audit")
        if (m.key() or b"").startswith(b"receipt/")
    )


def verify(kafka: FakeKafka, monkeypatch: Any, *argv: str, **extra: str) -> tuple[int, str, str]:
    """`training-filter audit verify ARGV` with the test's settings; (exit status, stdout, stderr)."""
    for k, v in env(**extra).items():
        monkeypatch.setenv(k, v)
    parser = argparse.ArgumentParser()
    parser.add_argument("--since")
    parser.add_argument("--until")
    parser.add_argument("--offsets", action="append")
    parser.add_argument("--policies", default=str(POLICY.parent))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    out, err = io.StringIO(), io.StringIO()
    code = main_audit_verify(parser.parse_args(list(argv)), out, err, kafka.clients())
    return code, out.getvalue(), err.getvalue()
