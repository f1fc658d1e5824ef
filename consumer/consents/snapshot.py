"""The consent set's snapshot file: the format of the opt-out filter's (consumer/optouts/filter.py: one
JSON header line, then the body, written atomically), with the table's 64-bit words as the body,
followed by the consent history (consumer/consents/history.py) as one JSON array.

The header records the capacity and table size, the byte order, the entries, a BLAKE2b digest, the
HMAC key's check value, the topic's id and the feed's next offset per partition. A snapshot that
does not match (other capacity, key, topic, byte order or format; damaged) is ignored and the topic
is read again. The body is read straight into the table (no second copy of up to 1 GB).
"""

from __future__ import annotations

import hashlib
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import orjson

from consumer.consents.fingerprints import ConsentSet, slots_for
from consumer.consents.history import ConsentHistory
from consumer.optouts.filter import LoadedSnapshot, Offsets, SnapshotError, offsets_by_topic

# 2: the history after the table; 3: committed records only (an older snapshot, read uncommitted, may
# hold a grant of an aborted transaction: it is not resumed, the topic is read again).
FORMAT = 3
KIND = "consent-set"


def header(
    consents: ConsentSet,
    history: ConsentHistory,
    offsets: Offsets,
    topic_ids: dict[str, str | None],
    key_check: str,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "kind": KIND,
        "byteorder": sys.byteorder,
        "capacity": consents.capacity,
        "slots": consents.slots,
        "entries": consents.entries,
        "history": len(history),
        "history_capacity": history.capacity,
        "kept_out": history.kept_out,
        "key_check": key_check,
        "topic_ids": dict(sorted(topic_ids.items())),
        "offsets": offsets_by_topic(offsets, topic_ids),
        "saved_at": time.time(),
    }


def body(consents: ConsentSet, history: ConsentHistory) -> bytes:
    """A copy of the table and the history, taken under the mirror's lock so that a background write
    sees one instant."""
    return consents.table().tobytes() + orjson.dumps(list(history.rows()))


def load(path: Path, capacity: int, history_capacity: int, topics: list[str], key_check: str) -> LoadedSnapshot:
    """The consent set, its history (`extra`) and the feed offsets saved in `path`, or SnapshotError
    saying why they cannot be used."""
    slots = slots_for(capacity)
    expected = {
        "format": FORMAT,
        "kind": KIND,
        "byteorder": sys.byteorder,
        "capacity": capacity,
        "slots": slots,
        "history_capacity": history_capacity,
    }
    try:
        with path.open("rb") as handle:
            head = orjson.loads(handle.readline(64 * 1024))
            for key, value in expected.items():
                if head.get(key) != value:
                    raise SnapshotError(f"snapshot {key} is {head.get(key)!r}, this service needs {value!r}")
            if sorted(head.get("topic_ids", {})) != sorted(topics):
                raise SnapshotError(
                    f"snapshot is of topics {sorted(head.get('topic_ids', {}))}, this service reads {topics}"
                )
            if head.get("key_check") != key_check:
                raise SnapshotError("snapshot was made with another pseudonymisation key")
            table = array("Q", [0]) * slots
            view = memoryview(table).cast("B")
            if handle.readinto(view) != len(view):
                raise SnapshotError("snapshot is truncated")
            rest = handle.read()
            if len(view) + len(rest) != head.get("length"):
                raise SnapshotError("snapshot is truncated or too long")
    except FileNotFoundError as exc:
        raise SnapshotError("no snapshot file") from exc
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SnapshotError(f"unreadable snapshot: {type(exc).__name__}") from exc
    digest = hashlib.blake2b(view, digest_size=32)
    digest.update(rest)
    if digest.hexdigest() != head.get("blake2b"):
        raise SnapshotError("snapshot digest does not match its contents")
    try:
        # A snapshot that does not say is taken to have kept users out (fail closed).
        history = ConsentHistory.from_rows(history_capacity, orjson.loads(rest), int(head.get("kept_out", 1)))
    except (ValueError, TypeError) as exc:
        raise SnapshotError(f"snapshot history does not parse: {type(exc).__name__}") from exc
    consents = ConsentSet(capacity, table, int(head["entries"]))
    offsets = {(t, int(p)): int(o) for t, parts in head["offsets"].items() for p, o in parts.items()}
    saved_at = float(head.get("saved_at", 0.0))
    return LoadedSnapshot(consents, offsets, dict(head["topic_ids"]), saved_at, history)  # type: ignore[arg-type]
