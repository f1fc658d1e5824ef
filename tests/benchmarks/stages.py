"""The stages scenario: the per-stage cost of the hot loop, in µs per record, measured in-process on
the benchmark input (decode, the rules, the opt-out look-up, encode and pseudonymise, produce()).

Result: `stages_us_per_record`.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Producer

from consumer.datapath.pseudonym import Pseudonymiser
from consumer.optouts.filter import OptOutFilter
from consumer.wire import fastpath
from consumer.wire.codec import POST, TRAINING_RECORD, Codec
from rules import Decider, Reason, Source
from tests.benchmarks.harness import NO_LIMIT

Decoded = list[tuple[bytes, Any]]  # (the value, fastpath.decode_post's fields)


def _never(_: Any) -> bool:
    return False


def _baseline(*_: Any) -> None:
    """A call with the same arguments as Decider.decide that does nothing: the loop's own cost."""


def _nothing(_: Any) -> None:
    """The same for the Bloom look-up."""


def profile(
    values: list[bytes], optouts: OptOutFilter, decider: Decider, bootstrap: str, topic: str, key: bytes
) -> dict[str, float]:
    codec = Codec()
    count = len(values)
    result: dict[str, float] = {}
    decoded, result["decode_fast_path"] = _decode_fast_path(values, codec.header(POST))
    result["decode_fastavro_reference"] = _decode_reference(values[: min(count, 50_000)], codec)
    result["rules"], result["harness_loop_subtracted"] = _rules(decoded, decider)

    # The filter holds pseudonyms: the service's membership test is the (memoised) HMAC, then the look-up.
    contains = optouts.contains
    pseudonymiser = Pseudonymiser(key)
    pseudonym_of = pseudonymiser.pseudonym

    def opted_out(user_id: bytes) -> bool:
        return bool(contains(pseudonym_of(user_id)))

    result["bloom_lookup"] = _bloom_lookup(decoded, opted_out)

    decide = decider.decide
    eligible = [
        (v, f)
        for v, f in decoded
        if decide(Source.POST, f[4], f[3], f[2], f[8], NO_LIMIT, f[1], opted_out) is Reason.ELIGIBLE
    ]
    outputs, per_eligible = _encode(eligible, codec, decider, pseudonymiser, topic)
    result["encode_and_pseudonymise_per_eligible"] = per_eligible
    result["encode_and_pseudonymise"] = per_eligible * len(eligible) / count
    per_eligible = _produce(outputs, bootstrap, topic)
    result["produce_per_eligible"] = per_eligible
    result["produce"] = per_eligible * len(outputs) / count
    result["eligible_share"] = len(eligible) / count
    return result


def _decode_fast_path(values: list[bytes], header: bytes) -> tuple[Decoded, float]:
    """The decoded posts, and the fast path's µs per input record."""
    start = time.perf_counter()
    decoded = []
    for value in values:
        try:
            if not value.startswith(header):
                continue  # the hot loop sends these to the DLQ without decoding
            decoded.append((value, fastpath.decode_post(value)))
        except fastpath.FastPathMiss:
            pass
    return decoded, (time.perf_counter() - start) / len(values) * 1e6


def _decode_reference(sample: list[bytes], codec: Codec) -> float:
    start = time.perf_counter()
    for value in sample:
        try:
            codec.decode(value, POST)
        except Exception:
            pass
    return (time.perf_counter() - start) / len(sample) * 1e6


def _rules(decoded: Decoded, decider: Decider) -> tuple[float, float]:
    """(the rules' µs per record, the harness's loop subtracted from it). The rules and the Bloom
    filter cost well under a microsecond, so the harness's own loop (iterate, unpack, index) is
    measured alone and subtracted: the figures are the calls themselves."""
    source = Source.POST
    start = time.perf_counter()
    for _, f in decoded:
        _baseline(source, f[4], f[3], f[2], f[8], NO_LIMIT, f[1], _never)
    loop = (time.perf_counter() - start) / len(decoded) * 1e6
    decide = decider.decide
    start = time.perf_counter()
    for _, f in decoded:
        decide(source, f[4], f[3], f[2], f[8], NO_LIMIT, f[1], _never)
    return (time.perf_counter() - start) / len(decoded) * 1e6 - loop, loop


def _bloom_lookup(decoded: Decoded, opted_out: Any) -> float:
    for _, f in decoded:
        opted_out(f[1])  # the memo filled, as in the steady state of the service
    start = time.perf_counter()
    for _, f in decoded:
        _nothing(f[1])
    loop = (time.perf_counter() - start) / len(decoded) * 1e6
    start = time.perf_counter()
    for _, f in decoded:
        opted_out(f[1])
    return (time.perf_counter() - start) / len(decoded) * 1e6 - loop


def _encode(
    eligible: Decoded, codec: Codec, decider: Decider, pseudonymiser: Pseudonymiser, topic: str
) -> tuple[list[tuple[bytes, bytes]], float]:
    """The training records of the eligible posts with their keys, and µs per eligible record."""
    header = codec.header(TRAINING_RECORD)
    provenance = fastpath.avro_string(decider.policy.version) + fastpath.avro_string(topic) + fastpath.zigzag_varint(0)
    start = time.perf_counter()
    outputs = []
    for offset, (value, f) in enumerate(eligible):
        pseudonym = pseudonymiser.pseudonym(f[1])
        country = fastpath.avro_string(decider.allowed_country(f[3]) or "")
        outputs.append(
            (
                fastpath.training_record(
                    header, value, f[0], f[5], f[6], f[9], f[7], country, pseudonym, provenance, offset
                ),
                pseudonym,
            )
        )
    return outputs, (time.perf_counter() - start) / max(1, len(eligible)) * 1e6


def _produce(outputs: list[tuple[bytes, bytes]], bootstrap: str, topic: str) -> float:
    """CPU µs per record of handing records to librdkafka (the hot loop's share), not the broker round
    trip."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "enable.idempotence": True,
            "queue.buffering.max.messages": 500_000,
        }
    )
    start = time.process_time()
    for out, pseudonym in outputs:
        try:
            producer.produce(topic, out, pseudonym)
        except BufferError:
            producer.poll(0.05)
            producer.produce(topic, out, pseudonym)
    per_eligible = (time.process_time() - start) / max(1, len(outputs)) * 1e6
    producer.flush(60)
    return per_eligible
