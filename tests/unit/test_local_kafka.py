"""The local broker's own helpers (the broker itself is exercised by every integration test)."""

from __future__ import annotations


def test_local_kafka_cluster_ids_never_start_with_a_dash(monkeypatch):
    import uuid

    from consumer.devtools import local_kafka

    # 0xFB... encodes to a leading '-' in URL-safe base64; the next UUID does not.
    ids = iter([uuid.UUID(bytes=b"\xfb" + b"\x00" * 15), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(local_kafka.uuid, "uuid4", lambda: next(ids))
    assert not local_kafka._cluster_id().startswith("-")
