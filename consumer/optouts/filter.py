"""The opt-out Bloom filter (fastbloom-rs) and its snapshot file.

A Bloom filter never forgets and never misses a member: a user who opted out is always found; a
user who did not is wrongly found with probability about `fp_rate` (then their content is dropped:
the error is on the safe side). Its members are pseudonyms (HMAC of the user id), so that the
revocations topic, keyed by pseudonym, can fill it too (see consumer/optouts/applier.py).

Snapshot file: one JSON header line, then the filter's bytes. The header records the filter's
parameters, the library version, a BLAKE2b digest of the bytes, a check value of the HMAC key (not
the key), the topics' ids and the feed's next offset per topic and partition, so a restart loads
the filter and resumes the feed instead of re-reading the topics. A snapshot that does not match
(other parameters, library version, topics or key; damaged) is ignored and the topics are re-read.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
from fastbloom_rs import BloomFilter

FORMAT = 2
LIBRARY = "fastbloom-rs"

Offsets = dict[tuple[str, int], int]


class SnapshotError(Exception):
    """A snapshot file exists but cannot be used; the message says why (no personal data)."""


class OptOutFilter:
    __slots__ = ("_bloom", "capacity", "contains", "entries", "fp_rate")

    def __init__(self, capacity: int, fp_rate: float, bloom: BloomFilter | None = None, entries: int = 0) -> None:
        self.capacity = capacity
        self.fp_rate = fp_rate
        self._bloom = bloom if bloom is not None else BloomFilter(capacity, fp_rate)
        self.entries = entries  # distinct users added (a false positive on add is not counted)
        # The hot loop calls this with raw UTF-8 bytes (contains_bytes and contains_str hash the same bytes).
        # The library's Python wrapper adds a frame per call (0.15 µs); its Rust object is called directly.
        native = getattr(self._bloom, "_py_bloom", None)
        self.contains = native.contains_bytes if native is not None else self._bloom.contains_bytes

    def emptied(self) -> OptOutFilter:
        """A new, empty filter of the same size (a snapshot whose offsets cannot be used)."""
        return OptOutFilter(self.capacity, self.fp_rate)

    def add(self, user_id: str | bytes) -> bool:
        """Add a user; True when the filter did not (appear to) hold them before."""
        key = user_id.encode("utf-8") if isinstance(user_id, str) else user_id
        if self._bloom.add_if_not_contains(key):
            return False
        self.entries += 1
        return True

    def __contains__(self, user_id: str | bytes) -> bool:
        key = user_id.encode("utf-8") if isinstance(user_id, str) else user_id
        return bool(self._bloom.contains_bytes(key))

    @property
    def hashes(self) -> int:
        return int(self._bloom.hashes())

    @property
    def size_bytes(self) -> int:
        return bloom_bytes(self.capacity, self.fp_rate)

    @property
    def bits(self) -> int:
        return bloom_bits(self.capacity, self.fp_rate)

    def estimated_fp_rate(self) -> float:
        """(1 - e^(-k n / m))^k for the current number of entries."""
        k, m = self.hashes, self.bits
        return float((1.0 - math.exp(-k * self.entries / m)) ** k) if m else 1.0

    # -- snapshots -------------------------------------------------------------------------------

    def header(self, offsets: Offsets, topic_ids: dict[str, str | None], key_check: str) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "library": LIBRARY,
            "library_version": version(LIBRARY),
            "capacity": self.capacity,
            "fp_rate": self.fp_rate,
            "hashes": self.hashes,
            "entries": self.entries,
            "key_check": key_check,
            "topic_ids": dict(sorted(topic_ids.items())),
            "offsets": offsets_by_topic(offsets, topic_ids),
            "saved_at": time.time(),
        }

    def snapshot_bytes(self) -> bytes:
        return bytes(self._bloom.get_bytes())


def bloom_bits(capacity: int, fp_rate: float) -> int:
    """The optimal size for (capacity, fp_rate), as fastbloom-rs computes it (before allocating it:
    the start-up memory budget asks)."""
    return math.ceil(-capacity * math.log(fp_rate) / (math.log(2) ** 2))


def bloom_bytes(capacity: int, fp_rate: float) -> int:
    return math.ceil(bloom_bits(capacity, fp_rate) / 64) * 8  # stored as 64-bit words


def offsets_by_topic(offsets: Offsets, topic_ids: dict[str, str | None]) -> dict[str, dict[str, int]]:
    """A snapshot header's offsets: {topic: {partition: next offset}}, every topic present."""
    by_topic: dict[str, dict[str, int]] = {topic: {} for topic in topic_ids}
    for (topic, partition), offset in sorted(offsets.items()):
        by_topic.setdefault(topic, {})[str(partition)] = offset
    return by_topic


def write_snapshot(path: Path, header: dict[str, Any], body: bytes) -> None:
    """Atomically replace `path`: write a temporary file beside it, fsync, rename."""
    header = {**header, "blake2b": hashlib.blake2b(body, digest_size=32).hexdigest(), "length": len(body)}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(orjson.dumps(header) + b"\n")
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@dataclass(frozen=True)
class LoadedSnapshot:
    filter: OptOutFilter  # or the set a feed keeps (a consent set, a change set)
    offsets: Offsets
    topic_ids: dict[str, str | None]
    saved_at: float
    extra: Any = None  # what else the snapshot held (the consent history)


def read_snapshot_file(path: Path) -> tuple[dict[str, Any], bytes]:
    """A snapshot file's header and body (this format, and the change set's), or SnapshotError."""
    try:
        with path.open("rb") as handle:
            header = orjson.loads(handle.readline(64 * 1024))
            return header, handle.read()
    except FileNotFoundError as exc:
        raise SnapshotError("no snapshot file") from exc
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SnapshotError(f"unreadable snapshot: {type(exc).__name__}") from exc


def load_snapshot(path: Path, capacity: int, fp_rate: float, topics: list[str], key_check: str) -> LoadedSnapshot:
    """The filter and feed offsets saved in `path`, or SnapshotError saying why it cannot be used."""
    header, body = read_snapshot_file(path)
    expected = {
        "format": FORMAT,
        "library": LIBRARY,
        "library_version": version(LIBRARY),
        "capacity": capacity,
        "fp_rate": fp_rate,
    }
    for key, value in expected.items():
        if header.get(key) != value:
            raise SnapshotError(f"snapshot {key} is {header.get(key)!r}, this service needs {value!r}")
    if sorted(header.get("topic_ids", {})) != sorted(topics):
        raise SnapshotError(f"snapshot is of topics {sorted(header.get('topic_ids', {}))}, this service reads {topics}")
    if header.get("key_check") != key_check:
        raise SnapshotError("snapshot was made with another pseudonymisation key")
    if header.get("length") != len(body):
        raise SnapshotError("snapshot is truncated")
    if hashlib.blake2b(body, digest_size=32).hexdigest() != header.get("blake2b"):
        raise SnapshotError("snapshot digest does not match its contents")
    bloom = BloomFilter.from_bytes(body, int(header["hashes"]))
    loaded = OptOutFilter(capacity, fp_rate, bloom, int(header["entries"]))
    offsets = {(t, int(p)): int(o) for t, parts in header["offsets"].items() for p, o in parts.items()}
    return LoadedSnapshot(loaded, offsets, dict(header["topic_ids"]), float(header.get("saved_at", 0.0)))
