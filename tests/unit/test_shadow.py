"""Shadow evaluation: a candidate policy decided beside the active one in the hot loop, counted by
(source, active, shadow); its settings, its metric, and `training-filter check --compare`."""

from __future__ import annotations

import io
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from prometheus_client import generate_latest

from consumer.commands.check import decisions, run_check
from consumer.datapath.shadow import Shadow, by_decisions, would_add, would_remove
from consumer.devtools.generator import StreamGenerator
from consumer.operations.metrics import Metrics
from consumer.operations.settings import ConfigError, load_settings
from consumer.wire.codec import POST, Codec, SchemaCatalog
from rules import Decider, Reason, Source, load_policy, parse_policy
from tests.fakes import Msg, RecordingProducer, processor, run
from tests.samples import CANDIDATE_POLICY
from tests.samples import POST as SAMPLE_POST
from tests.shadow_oracle import SOURCE_LABEL, decide_generated, expected_pairs

ACTIVE = load_policy()
CANDIDATE = parse_policy(CANDIDATE_POLICY)
ENV = {"TF_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "TF_HMAC_KEY": "x" * 32}


def _stream(count: int = 3000, seed: int = 3):
    generator = StreamGenerator(seed=seed, users_per_pool=300, posts_topic="posts", ai_topic="ai")
    stream = list(generator.stream(count))
    opted = {u.user_id for u in generator.pools["opted"]}
    return stream, opted


def _messages(stream) -> list[Msg]:
    # consume() returns a partition's records together; two partitions per topic, interleaved runs.
    return [Msg(g.topic, g.value, g.key, partition=i % 2, offset=i) for i, g in enumerate(stream)]


def _with_shadow(opted: set[str], policy=CANDIDATE, calls: Counter | None = None):
    def opted_out(user_id: bytes) -> bool:
        if calls is not None:
            calls[user_id] += 1
        return user_id.decode() in opted

    proc, producer = processor(opted_out=opted_out)
    proc.shadow = Shadow(Decider(policy))
    return proc, producer


def _in_batches(proc, messages, size: int = 500) -> dict:
    tally: dict = {}
    for i in range(0, len(messages), size):
        for key, count in run(proc, messages[i : i + size]).items():
            tally[key] = tally.get(key, 0) + count
    return tally


def test_the_oracle_agrees_with_the_generator():
    stream, opted = _stream()
    assert all(decide_generated(ACTIVE, g, opted) == g.expected for g in stream)


def test_counts_by_active_and_shadow_equal_both_policies_applied_independently():
    stream, opted = _stream()
    proc, _ = _with_shadow(opted)
    tally = _in_batches(proc, _messages(stream))
    counted = {(str(s), str(a), str(b)): n for (s, a, b), n in proc.shadow.totals.items()}
    expected = expected_pairs(ACTIVE, CANDIDATE, stream, opted)
    assert counted == dict(expected)
    # the candidate really changes things both ways, and the active counts are the shadow's row sums
    assert would_add(proc.shadow.totals) > 20 and would_remove(proc.shadow.totals) > 100
    assert {("region", "eligible"), ("eligible", "under_age"), ("eligible", "region")} <= {
        (a, b) for (_, a, b) in expected
    }
    rows: Counter = Counter()
    for (source, active, _), n in proc.shadow.totals.items():
        rows[source, active] += n
    assert dict(rows) == tally


def test_the_shadow_changes_nothing_the_active_policy_emits():
    stream, opted = _stream(1500, seed=4)
    plain, plain_out = processor(opted_out=lambda u: u.decode() in opted)
    shadowed, shadowed_out = _with_shadow(opted)
    messages = _messages(stream)
    assert _in_batches(plain, messages) == _in_batches(shadowed, messages)
    assert plain_out.sent == shadowed_out.sent
    assert plain.dlq_causes == shadowed.dlq_causes


CODEC = Codec()


def _post(post_id: str, user: str, country: str) -> bytes:
    return CODEC.encode(POST, {**SAMPLE_POST, "post_id": post_id, "author_id": user, "author_country": country})


def test_the_opt_out_filter_is_asked_at_most_once_a_record_and_by_the_shadow_when_only_it_needs_it():
    # An opted-out user in the United Kingdom: the active policy stops at the region, never asking the
    # filter; the candidate admits GB, so it must ask, and must find the opt-out. (The sample author
    # is 36: adult under both policies.)
    calls: Counter = Counter()
    proc, _ = _with_shadow({"gone-uk", "gone-at"}, calls=calls)
    messages = [
        Msg("posts", _post("p1", "gone-uk", "UK"), offset=0),
        Msg("posts", _post("p2", "gone-at", "AT"), offset=1),
        Msg("posts", _post("p3", "here-at", "AT"), offset=2),
        Msg("posts", _post("p4", "here-de", "de"), offset=3),
    ]
    run(proc, messages)
    assert proc.shadow.totals == {
        (Source.POST, Reason.REGION, Reason.OPTED_OUT): 1,
        (Source.POST, Reason.OPTED_OUT, Reason.OPTED_OUT): 1,
        (Source.POST, Reason.ELIGIBLE, Reason.ELIGIBLE): 1,
        (Source.POST, Reason.ELIGIBLE, Reason.REGION): 1,
    }
    assert calls == Counter({b"gone-uk": 1, b"gone-at": 1, b"here-at": 1, b"here-de": 1})


def test_malformed_is_malformed_under_both_and_the_slow_path_is_shadowed_too(monkeypatch):
    stream, opted = _stream(600, seed=6)
    proc, _ = _with_shadow(opted)
    # Every record through the reference codec (as for another schema version or a registry id).
    for route in proc.routes.values():
        route.fast_headers.clear()
    monkeypatch.setattr(proc.codec, "is_reader_schema", lambda *_: False)
    run(proc, [*_messages(stream), Msg("posts", b"garbage", offset=10000)])
    counted = {(str(s), str(a), str(b)): n for (s, a, b), n in proc.shadow.totals.items()}
    expected = expected_pairs(ACTIVE, CANDIDATE, stream, opted)
    expected["POST", "malformed", "malformed"] += 1
    assert counted == dict(expected)
    assert not any(a == "malformed" and b != "malformed" for (_, a, b) in counted)


def test_a_batch_that_raises_adds_nothing_to_the_shadow():
    stream, opted = _stream(50, seed=7)
    proc, producer = _with_shadow(opted)

    def refuse(*_args, **_kwargs):
        raise RuntimeError("producer gone")

    producer.produce = refuse  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        run(proc, _messages([g for g in stream if g.expected == "eligible"]))
    assert proc.shadow.totals == {}
    producer.produce = RecordingProducer().produce  # type: ignore[method-assign]
    run(proc, _messages(stream[:10]))
    assert sum(proc.shadow.totals.values()) == 10


def test_the_metric_has_every_series_from_the_start_and_only_reason_labels():
    metrics = Metrics()
    sink = metrics.shadow_sink(CANDIDATE.version)
    sink(
        {
            (Source.POST, Reason.ELIGIBLE, Reason.UNDER_AGE): 3,
            (Source.AI_INTERACTION, Reason.REGION, Reason.ELIGIBLE): 2,
        }
    )
    text = generate_latest(metrics.registry).decode()
    assert 'training_filter_shadow_policy_info{version="2026-12-01.1-candidate"} 1.0' in text
    assert 'training_filter_shadow_decisions_total{active="eligible",shadow="under_age",source="POST"} 3.0' in text
    assert (
        'training_filter_shadow_decisions_total{active="region",shadow="eligible",source="AI_INTERACTION"} 2.0' in text
    )
    series = [line for line in text.splitlines() if line.startswith("training_filter_shadow_decisions_total{")]
    assert len(series) == len(Source) * len(Reason) ** 2
    labels = {label for line in series for label in line.split("{")[1].split("}")[0].split(",")}
    allowed = {f'{k}="{v}"' for k in ("active", "shadow") for v in Reason} | {f'source="{s}"' for s in Source}
    assert labels <= allowed


def test_without_a_shadow_there_are_no_shadow_series():
    text = generate_latest(Metrics().registry).decode()
    assert "training_filter_shadow_decisions_total{" not in text
    assert "training_filter_shadow_policy_info{" not in text


def test_settings_load_the_shadow_policy(tmp_path: Path):
    path = tmp_path / "candidate.toml"
    path.write_text(CANDIDATE_POLICY)
    settings = load_settings({**ENV, "TF_SHADOW_POLICY_FILE": str(path)})
    assert settings.shadow_policy == CANDIDATE
    assert load_settings(ENV).shadow_policy is None


def test_a_bad_shadow_policy_stops_start_up_with_every_other_problem(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text(CANDIDATE_POLICY.replace("minimum_age = 21", "minimum_age = -1"))
    with pytest.raises(ConfigError) as err:
        load_settings({**ENV, "TF_SHADOW_POLICY_FILE": str(bad), "TF_BATCH_SIZE": "zero"})
    message = str(err.value)
    assert "TF_SHADOW_POLICY_FILE" in message and "minimum_age" in message and "TF_BATCH_SIZE" in message
    with pytest.raises(ConfigError, match=r"TF_SHADOW_POLICY_FILE.*cannot read"):
        load_settings({**ENV, "TF_SHADOW_POLICY_FILE": str(tmp_path / "missing.toml")})
    same_version = tmp_path / "same.toml"
    same_version.write_text(CANDIDATE_POLICY.replace("2026-12-01.1-candidate", ACTIVE.version))
    with pytest.raises(ConfigError, match="its own version"):
        load_settings({**ENV, "TF_SHADOW_POLICY_FILE": str(same_version)})


# -- training-filter check --compare ------------------------------------------------------------------

LINES = [
    {"post_id": "p1", "author_id": "u1", "author_birth_date": "1990-05-01", "author_country": "de"},
    {"post_id": "p2", "author_id": "u2", "author_birth_date": "2006-03-01", "author_country": "AT"},
    {"post_id": "p3", "author_id": "u3", "author_birth_date": "1985-07-14", "author_country": "uk"},
    {
        "post_id": "p4",
        "author_id": "u4",
        "author_birth_date": "1985-07-14",
        "author_country": "SE",
        "visibility": "FRIENDS",
    },
    {"post_id": "p5", "author_id": "u5", "author_birth_date": "1970-01-01", "author_country": "IT"},
    {"post_id": "p6", "author_id": "gone", "author_birth_date": "1985-07-14", "author_country": "GB"},
]
COMMON = {
    "visibility": "PUBLIC",
    "kind": "POST",
    "surface": "facebook",
    "text": "t",
    "created_at": "2026-01-01T10:00:00Z",
}
RAW = [orjson.dumps({**COMMON, **line}) for line in LINES] + [b"not json"]
EXPECTED = [
    ("p1", "eligible", "region"),  # DE is not in the candidate's regions
    ("p2", "eligible", "under_age"),  # 19 years old
    ("p3", "region", "eligible"),  # UK is GB, which the candidate admits
    ("p4", "not_public", "not_public"),
    ("p5", "eligible", "eligible"),
    ("p6", "region", "opted_out"),  # only the candidate reaches the opt-out check
    (None, "malformed", "malformed"),
]


def test_check_compare_gives_both_decisions_per_line():
    out = list(decisions(RAW, "post", ACTIVE, frozenset({"gone"}), SchemaCatalog(), shadow_policy=CANDIDATE))
    assert [(d["id"], d["decision"], d["shadow"]) for d in out] == EXPECTED
    plain = list(decisions(RAW, "post", ACTIVE, frozenset({"gone"}), SchemaCatalog()))
    assert [(d["id"], d["decision"]) for d in plain] == [(i, a) for i, a, _ in EXPECTED]
    assert all("shadow" not in d for d in plain)


def test_check_compare_prints_the_table(tmp_path: Path):
    optouts = tmp_path / "optouts.txt"
    optouts.write_text("gone\n")
    stdout, stderr = io.BytesIO(), io.StringIO()
    assert (
        run_check("post", ACTIVE, optouts, io.BytesIO(b"\n".join(RAW)), stdout, shadow_policy=CANDIDATE, stderr=stderr)
        == 0
    )
    assert len(stdout.getvalue().splitlines()) == len(EXPECTED)
    table = stderr.getvalue()
    assert f"active policy {ACTIVE.version}, shadow policy {CANDIDATE.version}: 7 records" in table
    rows = {tuple(line.split()[:3]) for line in table.splitlines()[2:-1]}
    assert rows == {
        ("malformed", "malformed", "1"),
        ("not_public", "not_public", "1"),
        ("region", "eligible", "1"),
        ("region", "opted_out", "1"),
        ("eligible", "region", "1"),
        ("eligible", "under_age", "1"),
        ("eligible", "eligible", "1"),
    }
    assert table.splitlines()[-1].startswith("would add 1 (eligible under the shadow policy only), would remove 2")


def test_check_compare_from_the_command_line(tmp_path: Path):
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(CANDIDATE_POLICY)
    command = [sys.executable, "-m", "consumer.cli", "check", "--source", "post", "--compare", str(candidate)]
    done = subprocess.run(command, input=b"\n".join(RAW[:3]), capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    assert [orjson.loads(line)["shadow"] for line in done.stdout.splitlines()] == ["region", "under_age", "eligible"]
    assert b"would add 1" in done.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1")
    done = subprocess.run([*command[:-1], str(bad)], input=b"", capture_output=True, check=False)
    assert done.returncode == 2
    assert b"--compare" in done.stderr and b"version" in done.stderr


def test_by_decisions_sums_over_sources():
    pairs = {
        (Source.POST, Reason.ELIGIBLE, Reason.REGION): 2,
        (Source.AI_INTERACTION, Reason.ELIGIBLE, Reason.REGION): 3,
        (Source.POST, Reason.REGION, Reason.ELIGIBLE): 1,
    }
    summed = by_decisions(pairs.items())
    assert summed == {(Reason.ELIGIBLE, Reason.REGION): 5, (Reason.REGION, Reason.ELIGIBLE): 1}
    assert would_add(summed) == 1 and would_remove(summed) == 5
    assert SOURCE_LABEL["post"] == str(Source.POST)
