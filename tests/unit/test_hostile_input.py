"""Hostile input: random and mutated bytes through the whole hot loop (the real BatchProcessor with
a recording producer), whole records through the rules, oversized values, wrong schema ids, and a
newer schema version with added fields."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.wire.codec import AI_INTERACTION, POST, TRAINING_RECORD, Codec
from rules import Decider, Reason, Source, load_policy
from tests.fakes import Msg, processor, run
from tests.samples import ADULT_POST, MINOR_AI

NO_LIMIT = 1 << 62  # no created_at is ever future_dated here (rules.Decider.decide's latest_ms)

CODEC = Codec()
POLICY = load_policy()


@settings(max_examples=500)
@given(values=st.lists(st.binary(max_size=300) | st.none(), max_size=20), topic=st.sampled_from(["posts", "ai"]))
def test_random_bytes_never_escape_and_never_reach_training(values, topic):
    proc, producer = processor()
    tally = run(proc, [Msg(topic, v, offset=i) for i, v in enumerate(values)])
    assert sum(tally.values()) == len(values)
    assert all(t == "dlq" for t, *_ in producer.sent), "random bytes reached the training topic"
    assert all(reason == "malformed" for (_, reason) in tally)


def mutations(record: dict[str, Any], name: str):  # type: ignore[no-untyped-def]
    data = CODEC.encode(name, record)
    return st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=4).map(
        lambda edits: _apply(data, edits)
    )


def _apply(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for index, byte in edits:
        out[index] = byte
    return bytes(out)


@settings(max_examples=800)
@given(value=mutations(MINOR_AI, AI_INTERACTION))
def test_a_mutated_minor_is_never_eligible_unless_the_mutation_made_them_a_valid_adult(value):
    proc, producer = processor()
    run(proc, [Msg("ai", value)])
    for topic, out, *_ in producer.sent:
        if topic != "training":
            continue
        # Emitted: then the mutated bytes must decode (reference codec) to a record that passes every rule.
        _, record = CODEC.decode(value, AI_INTERACTION)
        assert (
            Decider(POLICY).decide_record(Source.AI_INTERACTION, record, proc.latest_ms, lambda _u: False)
            is Reason.ELIGIBLE
        )
        assert CODEC.decode(out, TRAINING_RECORD)[1]["record_id"] == record["interaction_id"]


@settings(max_examples=800)
@given(value=mutations(ADULT_POST, POST))
def test_a_mutated_post_is_emitted_only_if_it_decodes_and_passes_every_rule(value):
    proc, producer = processor()
    run(proc, [Msg("posts", value)])
    emitted = [out for topic, out, *_ in producer.sent if topic == "training"]
    try:
        _, record = CODEC.decode(value, POST)
        # The same clock bound as the batch's (a mutated created_at may lie in the future).
        expected = Decider(POLICY).decide_record(Source.POST, record, proc.latest_ms, lambda _u: False)
    except Exception:
        expected = Reason.MALFORMED
    assert bool(emitted) == (expected is Reason.ELIGIBLE)


@given(
    record=st.fixed_dictionaries(
        {
            "post_id": st.text(max_size=5),
            "author_id": st.text(max_size=5),
            "author_birth_date": st.none() | st.dates(),
            "author_country": st.text(max_size=4),
            "visibility": st.text(max_size=8) | st.sampled_from(["PUBLIC", "FRIENDS"]),
            "kind": st.just("POST"),
            "surface": st.text(max_size=3),
            "language": st.none(),
            "text": st.text(max_size=5),
            "created_at": st.datetimes(timezones=st.just(dt.UTC))
            | st.datetimes()
            | st.integers()
            | st.text(max_size=3),
        }
    )
    | st.dictionaries(st.text(max_size=12), st.integers() | st.text(max_size=4) | st.none(), max_size=6)
)
def test_whole_records_through_the_rules_never_raise(record):
    reason = Decider(POLICY).decide_record(Source.POST, record, NO_LIMIT, lambda _u: False)
    assert isinstance(reason, Reason)
    if reason is Reason.ELIGIBLE:
        assert record["visibility"] == "PUBLIC"


def test_oversized_values_go_to_the_dlq():
    codec = Codec(max_value_bytes=10_000)
    proc, producer = processor(codec)
    big = codec.encode(POST, {**ADULT_POST, "text": "x" * 20_000})
    tally = run(proc, [Msg("posts", big)])
    assert tally == {(Source.POST, "malformed"): 1}
    ((topic, value, _key, headers),) = producer.sent
    assert topic == "dlq" and value == big
    assert dict(headers)["tf.cause"] == b"oversized"


def test_huge_strings_within_the_limit_are_processed():
    proc, producer = processor()
    huge = CODEC.encode(POST, {**ADULT_POST, "text": "ä" * 400_000})
    assert run(proc, [Msg("posts", huge)]) == {(Source.POST, "eligible"): 1}
    assert CODEC.decode(producer.sent[0][1], TRAINING_RECORD)[1]["text"] == "ä" * 400_000


def test_a_length_prefix_claiming_more_than_the_value_is_malformed():
    data = bytearray(CODEC.encode(POST, ADULT_POST))
    data[5] = 0xFE  # post_id length: a huge varint start
    data[6] = 0xFF
    proc, _producer = processor()
    assert run(proc, [Msg("posts", bytes(data))]) == {(Source.POST, "malformed"): 1}


def test_wrong_schema_ids_are_malformed_with_their_cause():
    proc, producer = processor()
    optout = CODEC.encode("platform.privacy.v1.OptOut", {"user_id": "u", "opted_out_at": 0, "source": "x"})
    ai_on_posts = CODEC.encode(AI_INTERACTION, MINOR_AI)
    unknown = b"\x00\x00\x00\x30\x39" + CODEC.encode(POST, ADULT_POST)[5:]
    run(proc, [Msg("posts", optout), Msg("posts", ai_on_posts), Msg("posts", unknown)])
    causes = [dict(h)["tf.cause"] for _t, _v, _k, h in producer.sent]
    assert causes == [b"schema_mismatch", b"schema_mismatch", b"unknown_schema"]


def test_a_sender_cannot_spoof_the_dead_letter_headers():
    proc, producer = processor()
    spoofed = [("tf.reason", b"eligible"), ("trace-id", b"abc"), ("tf.source.offset", b"0"), ("TF.cause", b"x")]
    run(proc, [Msg("posts", b"not avro", headers=spoofed, offset=7)])
    ((topic, _value, _key, headers),) = producer.sent
    assert topic == "dlq"
    names = [name for name, _ in headers]
    # The sender's own headers are kept, except any in the tf. namespace, which is the service's alone.
    assert ("trace-id", b"abc") in headers
    assert [h for h in headers if h[0].lower().startswith("tf.")] == [
        ("tf.reason", b"malformed"),
        ("tf.cause", b"bad_framing"),
        ("tf.source.topic", b"posts"),
        ("tf.source.partition", b"0"),
        ("tf.source.offset", b"7"),
        ("tf.source.timestamp", b"0"),
    ]
    assert names.count("tf.reason") == 1
