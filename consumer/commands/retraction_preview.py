"""`check --source content_change|account_change`: the retraction the service writes for each change
line, printed as `tail` prints it from the revocations topic (`{"key": ..., "value": ...}`, the value a
Revocation v2 record with its timestamps in ISO-8601).

Keys and values come from the emitter's own functions (consumer/changes/retractions.py `key` and
`value`, with `rules.account_retraction` under the policy given), so what is printed is what the
service writes. An account's key and every `author_pseudonym` are HMACs of the user id: with the
service's key (`--hmac-key-file`, else TF_HMAC_KEY_FILE or TF_HMAC_KEY) they are exact; without one
they are printed as null, and the rest (the reason, scope, record id, `created_before`) is still exact.
A line that is not a valid change prints `{"error": ...}` (what `produce` would refuse).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from consumer.changes.retractions import key, value
from consumer.commands.change_lines import change_record, facts_of
from consumer.commands.jsonl import JsonRecordError
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.wire.codec import REVOCATION, Codec
from rules import CONTENT_RETRACTIONS, DEFAULT_CLOCK_SKEW_MS, Decider, account_retraction


def previews(
    lines: Iterable[str | bytes], source: str, decider: Decider, pseudonymiser: Pseudonymiser | None, codec: Codec
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line: the retraction's key and value, or the line's error."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = change_record(line, source, codec.catalog)
        except JsonRecordError as exc:
            yield number, {"error": str(exc)}
            continue
        user_id = record["user_id"].encode("utf-8")
        pseudonym = pseudonymiser.pseudonym(user_id) if pseudonymiser is not None else b""
        if source == "content_change":
            reason = CONTENT_RETRACTIONS[record["change"]]
            k = key(reason, pseudonym, record["record_id"])
            v = value(reason, pseudonym, record["at"], record_id=record["record_id"])
        else:
            latest = int(time.time() * 1000) + DEFAULT_CLOCK_SKEW_MS  # the latest created_at admitted now
            reason, before = account_retraction(decider, facts_of(record), latest)
            k = key(reason, pseudonym)
            v = value(reason, pseudonym, record["at"], created_before=before)
        # Through the codec and back: the schema checks the value, and it prints as `tail` shows it.
        shown = codec.decode_own(codec.encode(REVOCATION, v), REVOCATION)
        if pseudonymiser is None:
            shown["author_pseudonym"] = None
            yield number, {"key": None if source == "account_change" else k.decode("utf-8"), "value": shown}
        else:
            yield number, {"key": k.decode("utf-8"), "value": shown}
