"""The change topics' records as the service reads them (docs/retractions.md#the-input-contract-for-changes):
a content change (`parse_content_change`) and an account change (`parse_account_change`). Used by the
change mirror's applier and by the retraction emitter; each fails closed in its own direction:

- a content change that cannot be read still stops its key (the record id, by contract): a change is
  final, and stopping a record that did not change only withholds it;
- an account change that cannot be read gives its key's account unknown facts (so its records are
  refused, `unknown_age`, until a readable change comes), never a deletion, which would be for good;
- a value whose id differs from its key acts on both.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from consumer.wire.codec import ACCOUNT_CHANGE, CONTENT_CHANGE, Codec, CodecError, LookupDeferredError
from consumer.wire.registry import RegistryRefused, RegistryUnavailable
from rules import CONTENT_RETRACTIONS, AccountFacts, Retraction
from rules.age import day_from_date

# What an account whose change cannot be read is taken to be: nothing known, so nothing eligible.
UNKNOWN = AccountFacts(deleted=False, birth_day=None, country="")
DEFERRED = (RegistryUnavailable, RegistryRefused, LookupDeferredError)


@dataclass(frozen=True, slots=True)
class ContentChanged:
    record_ids: list[str]  # the record ids stopped
    user_id: bytes | None  # the author, when the value says (None: the key was used)
    reason: Retraction
    at_ms: int
    result: str  # the change_feed_records_total result


@dataclass(frozen=True, slots=True)
class AccountChanged:
    accounts: list[tuple[bytes, AccountFacts]]  # (user id, facts as they are now)
    at_ms: int
    result: str


def _millis(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError("timestamp")


def parse_content_change(codec: Codec, msg: Any, lookup: bool = False, defer: bool = False) -> ContentChanged:
    """A content change. Never raises, except with `defer` (the emitter: it reads the record again
    later rather than write a retraction without its author) when the schema cannot be had now."""
    value, key = msg.value(), msg.key()
    if value is None:
        return ContentChanged([], None, Retraction.CONTENT_DELETED, 0, "record_tombstone_ignored")
    try:
        _, record = codec.decode(value, CONTENT_CHANGE, lookup)
        record_id, user_id, change = record["record_id"], record["user_id"], record["change"]
        if not isinstance(record_id, str) or not record_id or not isinstance(user_id, str) or not user_id:
            raise TypeError("record_id or user_id")
        reason = CONTENT_RETRACTIONS[change]
        at_ms = _millis(record["at"])
    except DEFERRED:
        if defer:
            raise
        result = "record_deferred_used_key"
    except (CodecError, KeyError, TypeError, ValueError):
        result = "record_undecodable_used_key"
    else:
        ids = [record_id]
        if key and key != record_id.encode("utf-8"):
            ids.append(key.decode("utf-8", "replace"))
            return ContentChanged(ids, user_id.encode("utf-8"), reason, at_ms, "record_key_mismatch")
        return ContentChanged(ids, user_id.encode("utf-8"), reason, at_ms, "record_stopped")
    if key:
        return ContentChanged(
            [key.decode("utf-8", "replace")], None, Retraction.CONTENT_DELETED, msg.timestamp()[1], result
        )
    return ContentChanged([], None, Retraction.CONTENT_DELETED, 0, "record_undecodable_dropped")


def parse_account_change(codec: Codec, msg: Any, lookup: bool = False) -> AccountChanged:
    """An account change. Raises RegistryUnavailable, RegistryRefused or LookupDeferredError when the
    value's schema cannot be had now (the caller reads it again later); otherwise never raises."""
    value, key = msg.value(), msg.key()
    if value is None:
        return AccountChanged([], 0, "account_tombstone_ignored")
    try:
        _, record = codec.decode(value, ACCOUNT_CHANGE, lookup)
        user_id, deleted, birth, country = record["user_id"], record["deleted"], record["birth_date"], record["country"]
        if not isinstance(user_id, str) or not user_id or not isinstance(deleted, bool) or not isinstance(country, str):
            raise TypeError("user_id, deleted or country")
        if birth is not None and (not isinstance(birth, dt.date) or isinstance(birth, dt.datetime)):
            raise TypeError("birth_date")
        facts = AccountFacts(deleted, day_from_date(birth) if birth is not None else None, country)
        at_ms = _millis(record["at"])
    except DEFERRED:
        raise
    except (CodecError, KeyError, TypeError, ValueError):
        pass
    else:
        accounts = [(user_id.encode("utf-8"), facts)]
        if key and key != accounts[0][0]:
            return AccountChanged([*accounts, (key, UNKNOWN)], at_ms, "account_key_mismatch")
        return AccountChanged(accounts, at_ms, "account_deleted" if deleted else "account_corrected")
    if key:
        return AccountChanged([(key, UNKNOWN)], msg.timestamp()[1], "account_undecodable")
    return AccountChanged([], 0, "account_undecodable_dropped")
