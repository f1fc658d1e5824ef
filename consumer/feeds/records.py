"""The privacy topics' records as the service reads them: an opt-out (`parse_optout`) and a consent
grant or withdrawal (`parse_consent`). Used by the mirrors' appliers and by the revocation emitter
(consumer/changes/retractions.py), which retracts both; here so that neither side imports the other.

Each fails closed in its own direction: an opt-out that cannot be read still opts out its key (the user
id, by contract); a consent that cannot be read withdraws (a consent is never inferred), but one whose
schema cannot be had *now* is read again later, never taken for a withdrawal, which is for good.
"""

from __future__ import annotations

from typing import Any

from consumer.wire.codec import CONSENT, OPTOUT, Codec, CodecError, LookupDeferredError
from consumer.wire.registry import RegistryRefused, RegistryUnavailable


def parse_optout(codec: Codec, msg: Any, lookup: bool = True) -> tuple[list[bytes], int, str]:
    """(user ids to treat as opted out, opted_out_at in epoch ms, result label) of an opt-out record.

    Never raises. An undecodable value, or a decoded one of an unexpected shape (e.g. a writer schema
    whose opted_out_at is a plain long, or a user id that is not a string), falls back to the key
    and the Kafka timestamp: failing closed means treating the record as the opt-out it most likely
    is. A value whose user id differs from the key opts out both. `lookup=False`: no registry request
    (the caller looked the batch's ids up, within bounds).
    """
    value = msg.value()
    key = msg.key()
    if value is None:
        return [], 0, "tombstone_ignored"  # an objection is never withdrawn by deleting it
    try:
        _, record = codec.decode(value, OPTOUT, lookup)
        user_id = record["user_id"]
        when = record["opted_out_at"]
        if not isinstance(user_id, str) or not user_id:
            raise TypeError("user_id")
        if hasattr(when, "timestamp"):
            millis = int(when.timestamp() * 1000)
        elif isinstance(when, int) and not isinstance(when, bool):
            millis = when
        else:
            raise TypeError("opted_out_at")
        users = [user_id.encode("utf-8")]
        if key and key != users[0]:
            users.append(key)
        return users, millis, "applied"
    except CodecError:
        result = "undecodable_used_key"
    except (RegistryUnavailable, RegistryRefused):  # its schema cannot be looked up now: the key opts out
        result = "registry_unavailable_used_key"
    except Exception:  # a decoded record the contract does not describe: the key still opts out
        result = "unexpected_used_key"
    if key:
        return [key], int(msg.timestamp()[1]), result
    return [], 0, "undecodable_dropped"


def parse_consent(codec: Codec, msg: Any, lookup: bool = True) -> tuple[list[bytes], bool, int, str]:
    """(user ids, granted, when in epoch ms, result label) of a consent record.

    Raises RegistryUnavailable, RegistryRefused or LookupDeferredError when the value's schema cannot
    be looked up now (the caller reads the record again later); otherwise never raises, and anything
    unexpected withdraws (fail closed: an undecodable record never grants). `lookup=False`: no
    registry request here.
    """
    value = msg.value()
    key = msg.key()
    if value is not None:
        try:
            _, record = codec.decode(value, CONSENT, lookup)
            user_id, granted, when = record["user_id"], record["granted"], record["at"]
            if not isinstance(user_id, str) or not user_id or not isinstance(granted, bool):
                raise TypeError("user_id or granted")
            millis = int(when.timestamp() * 1000) if hasattr(when, "timestamp") else int(when)
        except (RegistryUnavailable, RegistryRefused, LookupDeferredError):
            raise
        except CodecError:
            result = "undecodable_withdrawn"
        except Exception:
            result = "unexpected_withdrawn"
        else:
            users = [user_id.encode("utf-8")]
            if key and key != users[0]:
                return [*users, key], False, millis, "key_mismatch_withdrawn"
            return users, granted, millis, "granted" if granted else "withdrawn"
    else:
        result = "tombstone_withdrawn"
    if key:
        return [key], False, int(msg.timestamp()[1]), result
    return [], False, 0, "undecodable_dropped"
