"""The opt-in consent model without a broker: the policy setting, the decision, the consent set
(compiled and interpreted), its snapshot, the consent records and the settings that go with it."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import random
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from consumer.commands.check import run_check
from consumer.consents import fingerprints as compiled_or_not
from consumer.consents import snapshot
from consumer.consents.history import ConsentHistory
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.feeds.feeds import Feeds
from consumer.feeds.records import parse_consent
from consumer.operations.settings import ConfigError, load_settings
from consumer.optouts.filter import SnapshotError, write_snapshot
from consumer.wire.codec import CONSENT, Codec
from consumer.wire.registry import RegistryUnavailable
from rules import Decider, PolicyError, Reason, Source
from rules.policy import default_policy_path, parse_policy

NO_LIMIT = 1 << 62  # no created_at is ever future_dated here (rules.Decider.decide's latest_ms)

_spec = importlib.util.spec_from_file_location(
    "fingerprints_interpreted", Path(compiled_or_not.__file__).parent / "fingerprints.py"
)
assert _spec is not None and _spec.loader is not None
interpreted = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(interpreted)
MODULES = [pytest.param(compiled_or_not, id="compiled"), pytest.param(interpreted, id="interpreted")]

DEFAULT_TEXT = default_policy_path().read_text()
OPT_IN_TEXT = DEFAULT_TEXT.replace('version = "', 'consent_model = "opt_in"\nversion = "', 1)
OPT_IN = parse_policy(OPT_IN_TEXT)
KEY_CHECK = Pseudonymiser(b"k" * 32).key_check()
CODEC = Codec()
DAY_2000 = 10_957  # 2000-01-01
CREATED = 1_767_225_600_000  # 2026-01-01


def pseudonym(n: int | str) -> bytes:
    return hashlib.sha256(str(n).encode()).hexdigest().encode()


def crafted(home_hex: str, remainder: int) -> bytes:
    """A pseudonym with the given first 16 hex digits (its home) and 48-bit remainder."""
    return (home_hex + f"{remainder:012x}" + "0" * 36).encode()


# -- the policy and the decision -------------------------------------------------------------------


def test_consent_model_defaults_to_opt_out_and_reads_opt_in():
    assert parse_policy(DEFAULT_TEXT).consent_model == "opt_out"
    assert OPT_IN.consent_model == "opt_in"
    assert parse_policy(
        DEFAULT_TEXT.replace('version = "', 'consent_model = "opt_out"\nversion = "', 1)
    ).consent_model == ("opt_out")


@pytest.mark.parametrize("value", ['"opt-in"', '"OPT_IN"', "true", '""'])
def test_an_unknown_consent_model_is_a_policy_error_naming_the_key(value):
    with pytest.raises(PolicyError, match=r"'consent_model' must be \"opt_out\" or \"opt_in\""):
        parse_policy(DEFAULT_TEXT.replace('version = "', f'consent_model = {value}\nversion = "', 1), origin="p.toml")


def decide(policy, user: str, opted_out=(), consented=None) -> Reason:
    test = None if consented is None else (lambda u: u in consented)
    return Decider(policy).decide(
        Source.POST, True, "DE", DAY_2000, CREATED, NO_LIMIT, user, lambda u: u in opted_out, test
    )


def test_under_opt_in_only_a_present_consent_admits_and_an_optout_wins():
    assert decide(OPT_IN, "a", consented={"a"}) is Reason.ELIGIBLE
    assert decide(OPT_IN, "b", consented={"a"}) is Reason.NO_CONSENT
    assert decide(OPT_IN, "a") is Reason.NO_CONSENT  # no consent test at all: no consent
    assert decide(OPT_IN, "a", opted_out={"a"}, consented={"a"}) is Reason.OPTED_OUT
    # The cheaper checks still come first.
    decider = Decider(OPT_IN)
    assert (
        decider.decide(Source.POST, False, "DE", DAY_2000, CREATED, NO_LIMIT, "z", lambda u: False, None)
        is Reason.NOT_PUBLIC
    )
    assert (
        decider.decide(Source.POST, True, "US", DAY_2000, CREATED, NO_LIMIT, "z", lambda u: False, None)
        is Reason.REGION
    )


def test_under_opt_out_consents_are_not_asked():
    policy = parse_policy(DEFAULT_TEXT)

    def never(_u):
        raise AssertionError("asked for a consent under an opt-out policy")

    assert Decider(policy).decide(
        Source.POST, True, "DE", DAY_2000, CREATED, NO_LIMIT, "x", lambda u: False, never
    ) is (Reason.ELIGIBLE)
    assert decide(policy, "x") is Reason.ELIGIBLE
    assert str(Reason.NO_CONSENT) == "no_consent"


def test_check_command_takes_consents(tmp_path):
    policy_path = tmp_path / "opt-in.toml"
    policy_path.write_text(OPT_IN_TEXT)
    consents = tmp_path / "consents.txt"
    consents.write_text("u1\nu2\n")
    optouts = tmp_path / "optouts.txt"
    optouts.write_text("u2\n")
    lines = []
    for i, user in enumerate(("u1", "u2", "u3")):
        lines.append(
            orjson.dumps(
                {
                    "post_id": f"p{i}",
                    "author_id": user,
                    "author_birth_date": "1990-05-01",
                    "author_country": "de",
                    "visibility": "PUBLIC",
                    "kind": "POST",
                    "surface": "facebook",
                    "text": "hallo",
                    "created_at": "2026-01-01T10:00:00+01:00",
                }
            )
        )
    out = io.BytesIO()
    assert run_check("post", OPT_IN, optouts, io.BytesIO(b"\n".join(lines)), out, consents) == 0
    assert [orjson.loads(x)["decision"] for x in out.getvalue().splitlines()] == ["eligible", "opted_out", "no_consent"]


# -- the consent set -------------------------------------------------------------------------------


def test_table_sizes_memory_and_the_false_admission_figure():
    assert compiled_or_not.slots_for(10_000_000) == 1 << 24  # 128 MiB, load 0.60 at capacity
    assert compiled_or_not.slots_for(100_000_000) == 1 << 27  # 1 GiB, load 0.75 at capacity
    assert compiled_or_not.slots_for(1) == 1 << 10
    assert compiled_or_not.false_admission_probability(10_000_000, 1 << 24) == pytest.approx(2.07e-15, rel=0.01)
    assert compiled_or_not.false_admission_probability(100_000_000, 1 << 27) == pytest.approx(2.64e-15, rel=0.01)
    s = compiled_or_not.ConsentSet(10_000)
    assert s.slots == 1 << 14 and s.size_bytes == 8 << 14 and s.table().itemsize == 8


@pytest.mark.parametrize("module", MODULES)
def test_random_grants_and_withdrawals_agree_with_a_set(module):
    # A small table run near its hard limit, so chains are long and removals shift entries back.
    s = module.ConsentSet(700)  # 1024 slots
    users = [pseudonym(i) for i in range(2000)]
    present: set[bytes] = set()
    rng = random.Random(14)
    for _ in range(30_000):
        p = rng.choice(users)
        roll = rng.random()
        if roll < 0.5 and len(present) < 900:
            assert s.add(p) == (p not in present)
            present.add(p)
        elif roll < 0.8:
            assert s.remove(p) == (p in present)
            present.discard(p)
        else:
            assert s.contains(p) == (p in present)
        assert s.entries == len(present)
    assert [p in s for p in users] == [p in present for p in users]
    assert s.refused == 0


@pytest.mark.parametrize("module", MODULES)
def test_colliding_homes_and_the_end_of_the_table(module):
    s = module.ConsentSet(500)  # 1024 slots: the home is the top 10 bits
    last = "ffc0000000000000"  # home 1023, the last slot: its chain wraps to slot 0
    chain = [crafted(last, r) for r in (1, 2, 3, 4)]
    neighbour = crafted("0000000000000000", 9)  # home 0, displaced by the wrapped chain
    for p in [*chain, neighbour]:
        assert s.add(p)
    same_remainder_other_home = crafted("8000000000000000", 1)
    assert same_remainder_other_home not in s  # 48 equal bits are not enough: the home must match too
    assert s.remove(chain[0])
    assert all(p in s for p in [*chain[1:], neighbour])
    assert s.remove(chain[2])
    assert [p in s for p in chain] == [False, True, False, True] and neighbour in s
    assert not s.remove(chain[0])
    assert s.entries == 3


@pytest.mark.parametrize("module", MODULES)
def test_a_full_table_refuses_grants_and_fails_closed(module):
    s = module.ConsentSet(100)  # 1024 slots; grants beyond 90 % of them are refused
    users = [pseudonym(f"full-{i}") for i in range(1000)]
    added = [s.add(p) for p in users]
    assert s.entries == int(0.9 * 1024) + 1 == sum(added)
    assert s.refused == 1000 - s.entries
    refused = [p for p, ok in zip(users, added, strict=True) if not ok]
    assert not any(p in s for p in refused)  # not admitted
    assert all(p in s for p, ok in zip(users, added, strict=True) if ok)


def test_malformed_pseudonyms_are_refused():
    s = compiled_or_not.ConsentSet(10)
    with pytest.raises(ValueError):
        s.contains(b"abc")
    with pytest.raises(ValueError):
        s.add(b"Z" * 64)


def test_snapshot_round_trip_and_what_makes_one_unusable(tmp_path):
    s = compiled_or_not.ConsentSet(1000)
    for i in range(300):
        s.add(pseudonym(i))
    for i in range(0, 300, 3):
        s.remove(pseudonym(i))
    history = ConsentHistory(50)
    history.withdraw(pseudonym(0), 1_000)
    history.withdraw(pseudonym(1), 2_000)
    assert history.grant(pseudonym(1), 3_000)
    path = tmp_path / "consents.snapshot"
    write_snapshot(
        path,
        snapshot.header(s, history, {("consents", 0): 301, ("consents", 1): 7}, {"consents": "id"}, KEY_CHECK),
        snapshot.body(s, history),
    )
    loaded = snapshot.load(path, 1000, 50, ["consents"], KEY_CHECK)
    got = loaded.filter
    assert got.entries == 200 and loaded.offsets == {("consents", 0): 301, ("consents", 1): 7}
    assert [pseudonym(i) in got for i in range(300)] == [i % 3 != 0 for i in range(300)]
    # The history comes back as it was: who withdrew when, and since when a re-grant counts.
    assert loaded.extra.withdrawn == {pseudonym(0): 1_000, pseudonym(1): 2_000}
    assert loaded.extra.since == {pseudonym(1): 3_000}
    with pytest.raises(SnapshotError, match="history_capacity"):
        snapshot.load(path, 1000, 60, ["consents"], KEY_CHECK)
    with pytest.raises(SnapshotError, match="capacity"):
        snapshot.load(path, 2000, 50, ["consents"], KEY_CHECK)
    with pytest.raises(SnapshotError, match="pseudonymisation key"):
        snapshot.load(path, 1000, 50, ["consents"], "other")
    with pytest.raises(SnapshotError, match="topics"):
        snapshot.load(path, 1000, 50, ["other"], KEY_CHECK)
    # Format 2 was read uncommitted: it may hold a grant of an aborted transaction, so it is not resumed.
    older = {**snapshot.header(s, history, {("consents", 0): 301}, {"consents": "id"}, KEY_CHECK), "format": 2}
    write_snapshot(tmp_path / "older.snapshot", older, snapshot.body(s, history))
    with pytest.raises(SnapshotError, match="format is 2, this service needs 3"):
        snapshot.load(tmp_path / "older.snapshot", 1000, 50, ["consents"], KEY_CHECK)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="digest"):
        snapshot.load(path, 1000, 50, ["consents"], KEY_CHECK)
    path.write_bytes(bytes(data[:-8]))
    with pytest.raises(SnapshotError, match="truncated"):
        snapshot.load(path, 1000, 50, ["consents"], KEY_CHECK)
    with pytest.raises(SnapshotError, match="no snapshot"):
        snapshot.load(tmp_path / "absent", 1000, 50, ["consents"], KEY_CHECK)


# -- consent records -------------------------------------------------------------------------------


def message(key: bytes | None, value: bytes | None):
    return SimpleNamespace(key=lambda: key, value=lambda: value, timestamp=lambda: (1, 1_790_000_000_123))


def consent(user: str, granted: bool) -> bytes:
    return CODEC.encode(CONSENT, {"user_id": user, "granted": granted, "at": 1_790_000_000_000, "source": "dialog"})


def test_consent_records_grant_only_when_they_say_so():
    assert parse_consent(CODEC, message(b"u1", consent("u1", True))) == ([b"u1"], True, 1_790_000_000_000, "granted")
    assert parse_consent(CODEC, message(b"u1", consent("u1", False))) == (
        [b"u1"],
        False,
        1_790_000_000_000,
        "withdrawn",
    )
    assert parse_consent(CODEC, message(b"u1", None)) == ([b"u1"], False, 1_790_000_000_123, "tombstone_withdrawn")
    # Whatever is not a clear grant withdraws, by the key (the user id by contract) and the value's user.
    assert parse_consent(CODEC, message(b"u2", consent("u1", True))) == (
        [b"u1", b"u2"],
        False,
        1_790_000_000_000,
        "key_mismatch_withdrawn",
    )
    assert parse_consent(CODEC, message(b"u3", b"\x00\x00\x00\x00\x07\xff"))[1:] == (
        False,
        1_790_000_000_123,
        "undecodable_withdrawn",
    )
    assert parse_consent(CODEC, message(None, b"junk")) == ([], False, 0, "undecodable_dropped")


def test_a_consent_whose_schema_cannot_be_had_now_is_read_again_not_skipped():
    class Down:
        def decode(self, value, name, lookup=True):
            raise RegistryUnavailable("registry down")

    with pytest.raises(RegistryUnavailable):
        parse_consent(Down(), message(b"u1", consent("u1", True)))  # type: ignore[arg-type]


# -- settings --------------------------------------------------------------------------------------

ENV = {"TF_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "TF_HMAC_KEY": "k" * 32}


def test_opt_in_needs_a_consent_topic_and_says_so_with_the_other_problems(tmp_path):
    policy = tmp_path / "opt-in.toml"
    policy.write_text(OPT_IN_TEXT)
    with pytest.raises(ConfigError) as caught:
        load_settings({**ENV, "TF_POLICY_FILE": str(policy), "TF_BATCH_SIZE": "0", "TF_CONSENT_CAPACITY": "x"})
    text = str(caught.value)
    assert "TF_CONSENT_TOPIC is required: the policy" in text and 'consent_model = "opt_in"' in text
    assert "TF_BATCH_SIZE" in text and "TF_CONSENT_CAPACITY" in text
    settings = load_settings({**ENV, "TF_POLICY_FILE": str(policy), "TF_CONSENT_TOPIC": "privacy.consents.v1"})
    assert settings.consent_topic == "privacy.consents.v1" and settings.consent_capacity == 10_000_000
    assert settings.policy.consent_model == "opt_in"


def test_a_consent_topic_under_an_opt_out_policy_is_an_error():
    with pytest.raises(ConfigError, match='consent_model = "opt_in" in the policy, or unset them'):
        load_settings({**ENV, "TF_CONSENT_TOPIC": "privacy.consents.v1"})
    assert load_settings(ENV).consent_topic is None


def test_an_opt_in_shadow_policy_needs_the_consent_topic_and_reads_it_without_gating(tmp_path):
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(OPT_IN_TEXT.replace('version = "', 'version = "candidate-', 1))
    with pytest.raises(ConfigError, match="TF_CONSENT_TOPIC is required: the shadow policy"):
        load_settings({**ENV, "TF_SHADOW_POLICY_FILE": str(candidate)})
    settings = load_settings(
        {**ENV, "TF_SHADOW_POLICY_FILE": str(candidate), "TF_CONSENT_TOPIC": "privacy.consents.v1"}
    )
    assert settings.policy.consent_model == "opt_out" and settings.shadow_policy is not None
    assert settings.shadow_policy.consent_model == "opt_in"
    assert settings.consent_topic == "privacy.consents.v1"


class _Feed:
    def __init__(self, caught_up: bool, behind: float, error: str | None = None) -> None:
        self.caught_up_at = 1.0 if caught_up else None
        self.behind = behind
        self.last_error = error
        self.syncs: list[tuple[float, str]] = []
        self.closed = False

    def sync(self, timeout: float, everything: bool = False) -> bool:
        self.syncs.append((timeout, threading.current_thread().name))
        return self.caught_up_at is not None

    def seconds_behind(self) -> float:
        return self.behind

    def close(self) -> None:
        self.closed = True


def test_consents_read_for_the_shadow_only_do_not_gate_input_and_sync_on_their_own_thread():
    optouts, consents = _Feed(True, 0.1), _Feed(False, 60.0, "consent topic unreachable")
    gated = Feeds(optouts, consents, clock=lambda: 0.0)  # type: ignore[arg-type]
    assert gated.sync(1.0) is False and gated.caught_up_at is None and gated.seconds_behind() == 60.0
    assert gated.last_error == "consent topic unreachable"

    consents.syncs.clear()
    log = SimpleNamespace(error=lambda *a, **k: None)
    shadow_only = Feeds(optouts, consents, clock=lambda: 0.0, gate=False, log=log, sync_timeout=0.5)  # type: ignore[arg-type]
    main = threading.current_thread().name
    # Start-up: the consents are read with the catch-up's time, on the caller's thread, without gating.
    assert shadow_only.sync(1.0, everything=True) is True and consents.syncs == [(1.0, main)]
    assert shadow_only.caught_up_at == 1.0 and shadow_only.seconds_behind() == 0.1
    assert shadow_only.last_error is None
    # After it: a batch's sync waits for the opt-outs only; the consents sync on a thread of their own.
    assert shadow_only.sync(1.0) is True
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(consents.syncs) < 4:
        time.sleep(0.05)
    assert len(consents.syncs) >= 4
    assert {name for _, name in consents.syncs[1:]} == {"consent-sync"}
    assert {timeout for timeout, _ in consents.syncs[1:]} == {0.5}
    shadow_only.close()
    assert consents.closed and optouts.closed
    assert shadow_only.consent_sync is not None and not shadow_only.consent_sync.thread.is_alive()


def test_the_documented_example_policy_is_a_valid_opt_in_policy():
    page = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text()
    block = page.split("# rules/opt-in.toml", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    policy = parse_policy(block, origin="docs/policy.md")
    assert policy.consent_model == "opt_in"
    assert policy.regions == parse_policy(DEFAULT_TEXT).regions


@pytest.mark.parametrize("module", MODULES)
def test_clear_forgets_every_consent_in_place(module):
    s = module.ConsentSet(1000)
    users = [pseudonym(f"c-{i}") for i in range(500)]
    for p in users:
        s.add(p)
    table = s.table()
    s.clear()
    assert s.table() is table and s.entries == 0 and not any(p in s for p in users)
    assert s.add(users[0]) and users[0] in s
