"""The changes of the truth in the recipes' stream (issue 22): every case of docs/retractions.md that a
reader of the clean topic meets, on subjects picked from the generated records, and the truth they
leave (tests/recipes/oracle.py decides it).

The service runs under an opt-in policy (so a consent can be withdrawn and granted again): every user
of the stream grants consent first, except one who never does. Then, in this order:

- **before the service starts**: the generator's opt-outs; a version 1 revocation (schema id 5, as a
  release before Revocation v2 wrote it) of one user; a deletion of a record that is not published
  yet (a change that arrives before its record);
- **while the first instance runs, after it emitted the records** (`late_changes`): a deletion, a
  visibility change, an edit (the old id changed `EDITED`, the new version published as a new post),
  an account deletion, a birth date corrected to one under 18 for some of a user's records (after a
  correction of the same account stamped later but written first: the last written states it), a consent
  withdrawn and granted again (what was written before the new grant leaves), two late opt-outs;
- **re-deliveries**: records a retraction in force names, written to the clean topic again after it;
- **a policy change over history**, once both instances stopped (`policy_change`): the operator's
  `training-filter backfill --policy NEW.toml --admit` under a policy without one region and with one
  more country, so that emitted records are retracted (`policy/<record_id>`) and refused ones admitted
  (each after a `lifted` retraction of its key).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import fastavro

from consumer.devtools.generator import NOW, Generated
from consumer.wire.codec import schema_dir
from tests.harness import pseudonym
from tests.recipes import oracle

# avro/catalog.json's ids of the schemas the stream writes (in registry mode the registry's are used).
CATALOG_IDS = {
    "post.v1.avsc": 1,
    "ai_interaction.v1.avsc": 2,
    "optout.v1.avsc": 3,
    "revocation.v1.avsc": 5,
    "consent.v1.avsc": 7,
    "content_change.v1.avsc": 8,
    "account_change.v1.avsc": 9,
}
INPUT_FILES = {"post": "post.v1.avsc", "ai_interaction": "ai_interaction.v1.avsc"}
GRANTED_AT = NOW - dt.timedelta(days=90)  # every first grant: it covers the user's earlier content
CHANGED_AT = NOW + dt.timedelta(days=10)  # when the late changes were made
OLD_OPTOUT_AT = NOW - dt.timedelta(days=400)


class Framer:
    """Values in the Confluent wire format, framed with the catalog's ids or with a registry's (`ids`:
    catalog id -> the id to frame with)."""

    def __init__(self, ids: dict[int, int]) -> None:
        self.ids = ids
        self.schemas = {f: fastavro.parse_schema(json.loads((schema_dir() / f).read_text())) for f in CATALOG_IDS}

    def encode(self, file: str, record: dict[str, Any]) -> bytes:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, self.schemas[file], record)
        return b"\x00" + self.ids[CATALOG_IDS[file]].to_bytes(4, "big") + body.getvalue()

    def reframe(self, value: bytes) -> bytes:
        """A catalog-framed value (the generator's) with this framer's id for the same schema."""
        return b"\x00" + self.ids[int.from_bytes(value[1:5], "big")].to_bytes(4, "big") + value[5:]

    def decode(self, value: bytes, file: str) -> dict[str, Any]:
        record = fastavro.schemaless_reader(io.BytesIO(value[5:]), self.schemas[file], None)
        assert isinstance(record, dict)
        return record


Message = tuple[str, bytes, bytes]  # (topic, key, value)


@dataclass
class Scenario:
    """The subjects of the changes, picked from the generated records (eligible on their own facts)."""

    deleted: Generated
    hidden: Generated
    edited: Generated
    early: Generated  # its deletion arrives before it
    gone: str  # user ids
    corrected: str
    corrected_birth: dt.date
    regranted: str
    regrant_at: dt.datetime
    never_consented: str
    old_optout: str
    late: list[str]
    values: dict[str, dict[str, Any]]  # record id -> decoded input value
    eligible: dict[str, list[str]]  # user id -> the ids of their records eligible on their own facts

    def first_eligible(self, user: str) -> str:
        return min(self.eligible[user], key=lambda i: (self.values[i]["created_at"], i))

    def edit(self) -> dict[str, Any]:
        """The edited version of `edited`: a new post with an id of its own, written after the first."""
        old = self.values[self.edited.record_id]
        return {
            **old,
            "post_id": f"{old['post_id']}-edited",
            "text": old["text"] + " (edited)",
            "created_at": old["created_at"] + dt.timedelta(hours=1),
        }


def decode_inputs(framer: Framer, records: Iterable[Generated]) -> dict[str, dict[str, Any]]:
    return {g.record_id: framer.decode(g.value, INPUT_FILES[g.source]) for g in records if g.record_id}


def pick(records: list[Generated], values: dict[str, dict[str, Any]], late: int) -> Scenario:
    """Distinct subjects, the same for the same stream: users with eligible records (two roles need
    eligible records on three days or more), then eligible posts of other users."""
    eligible = [g for g in records if g.expected == "eligible"]
    by_user: dict[str, list[Generated]] = {}
    for g in eligible:
        by_user.setdefault(g.user_id or "", []).append(g)
    users = sorted(by_user, key=lambda u: (-len(by_user[u]), u))
    days = {u: sorted({values[g.record_id]["created_at"].date() for g in by_user[u]}) for u in users}
    spread = [u for u in users if len(days[u]) >= 3]
    corrected, regranted = spread[:2]
    rest = [u for u in users if u not in (corrected, regranted)]
    gone, never, old, *late_users = rest[: 3 + late]
    taken = {corrected, regranted, gone, never, old, *late_users}
    posts = [g for g in eligible if g.source == "post" and g.user_id not in taken]
    deleted, hidden, edited, early = posts[:4]

    # The corrected 18th birthday and the new grant fall amid the user's records: some on each side.
    bound = days[corrected][len(days[corrected]) // 2]
    times = sorted({values[g.record_id]["created_at"] for g in by_user[regranted]})
    return Scenario(
        deleted=deleted,
        hidden=hidden,
        edited=edited,
        early=early,
        gone=gone,
        corrected=corrected,
        corrected_birth=bound.replace(year=bound.year - 18),
        regranted=regranted,
        regrant_at=times[len(times) // 2],
        never_consented=never,
        old_optout=old,
        late=late_users,
        values=values,
        eligible={u: [g.record_id for g in by_user[u] if g.record_id] for u in users},
    )


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def consent(user: str, granted: bool, at: dt.datetime) -> dict[str, Any]:
    return {"user_id": user, "granted": granted, "at": at, "source": "consent_dialog"}


def content_change(g: Generated, change: str, replaced_by: str | None = None) -> dict[str, Any]:
    return {
        "record_id": g.record_id,
        "user_id": g.user_id,
        "change": change,
        "replaced_by": replaced_by,
        "at": CHANGED_AT,
        "source": "post_service",
    }


def account_change(
    user: str, deleted: bool, birth: dt.date | None, country: str, at: dt.datetime = CHANGED_AT
) -> dict[str, Any]:
    return {
        "user_id": user,
        "deleted": deleted,
        "birth_date": birth,
        "country": country,
        "at": at,
        "source": "support",
    }


@dataclass
class Events:
    """What was published, as the oracle reads it, and as messages to produce."""

    consents: list[dict[str, Any]] = field(default_factory=list)
    content: list[dict[str, Any]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    optouts: set[str] = field(default_factory=set)
    records: list[dict[str, Any]] = field(default_factory=list)  # published after the first run


def early_events(
    s: Scenario, framer: Framer, topics: Any, consent_topic: str, users: set[str]
) -> tuple[Events, list[Message]]:
    """The consents, the version 1 revocation and the deletion that precedes its record."""
    events = Events(optouts={s.old_optout})
    out: list[Message] = []
    for user in sorted(users - {s.never_consented}):
        events.consents.append(consent(user, True, GRANTED_AT))
        out.append((consent_topic, user.encode(), framer.encode("consent.v1.avsc", events.consents[-1])))
    old = pseudonym(s.old_optout)
    revocation = {"author_pseudonym": old, "opted_out_at": OLD_OPTOUT_AT}
    out.append((topics.revocations, old.encode(), framer.encode("revocation.v1.avsc", revocation)))
    events.content.append(content_change(s.early, "DELETED"))
    out.append(
        (
            topics.content_changes,
            s.early.record_id.encode(),
            framer.encode("content_change.v1.avsc", events.content[-1]),
        )
    )
    return events, out


def late_events(s: Scenario, framer: Framer, topics: Any, consent_topic: str) -> tuple[Events, list[Message]]:
    """The changes after the records were emitted (their retractions: `late_retractions`)."""
    events = Events(optouts=set(s.late))
    edit = s.edit()
    events.records.append(edit)
    events.content += [
        content_change(s.deleted, "DELETED"),
        content_change(s.hidden, "MADE_NON_PUBLIC"),
        content_change(s.edited, "EDITED", edit["post_id"]),
    ]
    first = s.values[s.first_eligible(s.corrected)]
    country = (first.get("author_country") or first["user_country"]).strip()
    events.accounts += [
        account_change(s.gone, True, None, "DE"),
        # Two corrections whose `at` goes back (a late one from another system): the one written last
        # states the facts, as compaction keeps it (docs/retractions.md, "Why the last read").
        account_change(s.corrected, False, s.corrected_birth, "US", CHANGED_AT + dt.timedelta(days=1)),
        account_change(s.corrected, False, s.corrected_birth, country),
    ]
    events.consents += [
        consent(s.regranted, False, s.regrant_at - dt.timedelta(days=1)),
        consent(s.regranted, True, s.regrant_at),
    ]
    out: list[Message] = [(topics.posts, edit["author_id"].encode(), framer.encode("post.v1.avsc", edit))]
    out += [
        (topics.content_changes, c["record_id"].encode(), framer.encode("content_change.v1.avsc", c))
        for c in events.content
    ]
    out += [
        (topics.account_changes, a["user_id"].encode(), framer.encode("account_change.v1.avsc", a))
        for a in events.accounts
    ]
    out += [(consent_topic, c["user_id"].encode(), framer.encode("consent.v1.avsc", c)) for c in events.consents]
    at = _ms(CHANGED_AT)
    out += [
        (
            topics.optouts,
            u.encode(),
            framer.encode("optout.v1.avsc", {"user_id": u, "opted_out_at": at, "source": "late"}),
        )
        for u in sorted(s.late)
    ]
    return events, out


# The retractions the late changes give: three content changes, three account changes, a withdrawal
# and a re-grant, and one per late opt-out.
def late_retractions(s: Scenario) -> int:
    return 3 + 3 + 2 + len(s.late)


def redelivered(s: Scenario) -> set[str]:
    """The emitted records written to the clean topic again after their retraction (what a re-delivery
    does): a deleted record, a late author's, and the earliest of the corrected and re-granted users'."""
    return {s.deleted.record_id, *(s.first_eligible(u) for u in (s.late[0], s.corrected, s.regranted))}


def truth(policy_text: str, values: Iterable[dict[str, Any]], optouts: set[str], *events: Events) -> oracle.Truth:
    t = oracle.Truth(oracle.Policy.parse(policy_text), dt.datetime.now(dt.UTC), list(values), set(optouts))
    for e in events:
        t.records += e.records
        t.optouts |= e.optouts
        t.content_changes += e.content
        t.account_changes += e.accounts
        t.consents += e.consents
    return t


@dataclass(frozen=True)
class PolicyChange:
    """The policy a backfill applies to the history: the stream's, without one region and with one more."""

    removed: str  # a region whose eligible records the new policy refuses: they are retracted
    added: str  # a country outside the regions whose records it admits (with --admit)
    text: str  # the new policy file


def policy_change(s: Scenario, policy_text: str, reasons: dict[str, str]) -> PolicyChange:
    """The region with the most eligible records (under `reasons`, the truth before the backfill) of which
    no subject of another change has a record, so each of those changes still does what it is there for;
    and the country outside the regions with the most records refused `region`. The new policy has a
    version of its own, as a backfill requires (every record it admits carries it)."""
    subjects = {s.gone, s.corrected, s.regranted, s.never_consented, s.old_optout, *s.late}
    subjects |= {g.user_id for g in (s.deleted, s.hidden, s.edited, s.early) if g.user_id}
    where = {i: oracle.country(v.get("author_country") or v["user_country"]) for i, v in s.values.items()}
    user = {i: v.get("author_id") or v["user_id"] for i, v in s.values.items()}
    taken = {where[i] for i in where if user[i] in subjects}

    def most(counted: list[str]) -> str:
        assert counted, "the stream has no record a new policy can change"
        return min(set(counted), key=lambda c: (-counted.count(c), c))

    # The edited version is not among `values`: it is a subject's record.
    removed = most([where[i] for i in where if reasons[i] == oracle.ELIGIBLE and where[i] not in taken])
    added = most([where[i] for i in where if reasons[i] == "region"])
    regions = [c for c in tomllib.loads(policy_text)["regions"] if oracle.country(c) != removed] + [added]
    text = re.sub(r"^regions = \[.*?\]", f"regions = {json.dumps(regions)}", policy_text, count=1, flags=re.M | re.S)
    text = re.sub(r'^version = "(.*)"', rf'version = "\1-without-{removed}-with-{added}"', text, count=1, flags=re.M)
    old, new = oracle.Policy.parse(policy_text), oracle.Policy.parse(text)
    assert (new.regions, new.opt_in) == ((old.regions - {removed}) | {added}, True), text
    return PolicyChange(removed, added, text)


def check(s: Scenario, before: dict[str, str], now: dict[str, str]) -> None:
    """Each change of the scenario did what it is there for: the records it concerns were eligible
    before it (so they were emitted and must be retracted) and are not now; where a change keeps part
    of a user's records, there are records on both sides."""
    for g, why in ((s.deleted, "content_changed"), (s.hidden, "content_changed"), (s.edited, "content_changed")):
        assert (before[g.record_id], now[g.record_id]) == (oracle.ELIGIBLE, why), g.record_id
    assert now[s.edit()["post_id"]] == oracle.ELIGIBLE, "the edited version is eligible"
    assert before[s.early.record_id] == now[s.early.record_id] == "content_changed", "deleted before it came"

    def reasons(user: str, of: dict[str, str]) -> set[str]:
        return {of[i] for i in s.eligible[user]}

    assert reasons(s.gone, before) == {oracle.ELIGIBLE} and reasons(s.gone, now) == {"account_deleted"}
    assert reasons(s.corrected, before) == {oracle.ELIGIBLE}
    assert reasons(s.corrected, now) == {oracle.ELIGIBLE, "under_age"}, "records before and after the 18th birthday"
    assert reasons(s.regranted, before) == {oracle.ELIGIBLE}
    assert reasons(s.regranted, now) == {oracle.ELIGIBLE, "no_consent"}, "records before and after the new grant"
    assert reasons(s.never_consented, now) == {"no_consent"}
    assert reasons(s.old_optout, before) == {"opted_out"}, "the version 1 revocation keeps the user out"
    for user in s.late:
        assert reasons(user, before) == {oracle.ELIGIBLE} and reasons(user, now) == {"opted_out"}
