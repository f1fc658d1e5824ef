"""The change set: what the change topics say, as every replica needs it to stop the records a change
concerns that reach it after the change (docs/retractions.md#the-change-set).

- **Stopped records**: a Bloom filter (the opt-out filter's class: the same mechanism) of the record ids
  with a content change, each as its Avro encoding (length varint and UTF-8), which is what the hot
  loop slices from a record without decoding it. A record id names one version, so a change is final
  and the set only grows; a false positive stops a record that never changed (the safe side).
- **Corrected accounts**: their facts by pseudonym, at most `account_capacity`. A correction that does
  not fit is refused (`correct` returns False) and its caller keeps the account out instead.

Deleted accounts are not kept here: they go into the opt-out filter, for good (consumer/changes/applier.py).

Snapshot file: the opt-out filter's format (consumer/optouts/filter.py: a JSON header line, then the
body, written atomically); the body is the Bloom filter's bytes followed by the corrected accounts as
one JSON array. Pseudonyms only: no user id, no record text.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
from fastbloom_rs import BloomFilter

from consumer.optouts.filter import LIBRARY, LoadedSnapshot, Offsets, OptOutFilter, SnapshotError, read_snapshot_file
from consumer.wire.fastpath import avro_string
from rules import AccountFacts

FORMAT = 1
KIND = "change-set"
# What one corrected account costs in the dict (key, facts object, slot): for the memory budget.
ACCOUNT_BYTES = 300


class ChangeSet:
    __slots__ = ("account_capacity", "accounts", "records", "refused")

    def __init__(
        self,
        capacity: int,
        fp_rate: float,
        account_capacity: int,
        records: OptOutFilter | None = None,
        accounts: dict[bytes, AccountFacts] | None = None,
        refused: int = 0,
    ) -> None:
        self.records = records if records is not None else OptOutFilter(capacity, fp_rate)
        self.accounts: dict[bytes, AccountFacts] = accounts if accounts is not None else {}
        self.account_capacity = account_capacity
        # Corrections that did not fit (their accounts were kept out through the opt-out filter
        # instead), since the set was empty: saved with the snapshot (consumer/service/feed_parts.py).
        self.refused = refused

    @property
    def entries(self) -> int:
        return self.records.entries + len(self.accounts)

    def emptied(self) -> ChangeSet:
        return ChangeSet(self.records.capacity, self.records.fp_rate, self.account_capacity)

    def stop(self, record_id: str) -> bool:
        """Stop a record id for good; True if it was not (apparently) stopped before."""
        return self.records.add(avro_string(record_id))

    def stopped(self, record_id: str) -> bool:
        return bool(self.records.contains(avro_string(record_id)))

    def correct(self, pseudonym: bytes, facts: AccountFacts) -> bool:
        """Record an account's facts (the latest replace the earlier); False if the set is full."""
        if pseudonym not in self.accounts and len(self.accounts) >= self.account_capacity:
            self.refused += 1
            return False
        self.accounts[pseudonym] = facts
        return True

    # -- snapshots ---------------------------------------------------------------------------------

    def header(self, offsets: Offsets, topic_ids: dict[str, str | None], key_check: str) -> dict[str, Any]:
        bloom = self.records.header(offsets, topic_ids, key_check)
        return {
            **bloom,
            "format": FORMAT,
            "kind": KIND,
            "bloom_format": bloom["format"],
            "bloom_length": len(self.records.snapshot_bytes()),
            "accounts": len(self.accounts),
            "account_capacity": self.account_capacity,
            "refused": self.refused,
            "entries": self.entries,
            "record_entries": self.records.entries,
            "saved_at": time.time(),
        }

    def snapshot_bytes(self) -> bytes:
        return self.records.snapshot_bytes() + orjson.dumps(list(_account_rows(self.accounts)))


def _account_rows(accounts: dict[bytes, AccountFacts]) -> Iterator[list[Any]]:
    for pseudonym, facts in accounts.items():
        yield [pseudonym.decode("ascii"), facts.deleted, facts.birth_day, facts.country]


def load(
    path: Path, capacity: int, fp_rate: float, account_capacity: int, topics: list[str], key_check: str
) -> LoadedSnapshot:
    """The change set and feed offsets saved in `path`, or SnapshotError saying why it cannot be used."""
    head, body = read_snapshot_file(path)
    expected = {
        "format": FORMAT,
        "kind": KIND,
        "library_version": version(LIBRARY),
        "capacity": capacity,
        "fp_rate": fp_rate,
        "account_capacity": account_capacity,
        "key_check": key_check,
        "length": len(body),
    }
    for key, value in expected.items():
        if head.get(key) != value:
            raise SnapshotError(f"snapshot {key} is {head.get(key)!r}, this service needs {value!r}")
    if sorted(head.get("topic_ids", {})) != sorted(topics):
        raise SnapshotError(f"snapshot is of topics {sorted(head.get('topic_ids', {}))}, this service reads {topics}")
    if hashlib.blake2b(body, digest_size=32).hexdigest() != head.get("blake2b"):
        raise SnapshotError("snapshot digest does not match its contents")
    split = int(head["bloom_length"])
    try:
        bloom = BloomFilter.from_bytes(body[:split], int(head["hashes"]))
        rows = orjson.loads(body[split:])
        accounts = {p.encode("ascii"): AccountFacts(bool(d), b, str(c)) for p, d, b, c in rows}
    except (ValueError, TypeError) as exc:
        raise SnapshotError(f"snapshot body does not parse: {type(exc).__name__}") from exc
    records = OptOutFilter(capacity, fp_rate, bloom, int(head["record_entries"]))
    # A snapshot that does not say is taken to have kept accounts out (fail closed).
    changes = ChangeSet(capacity, fp_rate, account_capacity, records, accounts, int(head.get("refused", 1)))
    offsets = {(t, int(p)): int(o) for t, parts in head["offsets"].items() for p, o in parts.items()}
    return LoadedSnapshot(changes, offsets, dict(head["topic_ids"]), float(head.get("saved_at", 0.0)))  # type: ignore[arg-type]
