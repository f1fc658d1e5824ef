"""Per-stage cost of the hot loop, in µs per record, measured in-process on the benchmark input."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Producer

from consumer.datapath.pseudonym import Pseudonymiser
from consumer.optouts.filter import OptOutFilter
from consumer.wire import fastpath
from consumer.wire.codec import POST, TRAINING_RECORD, Codec
from rules import Decider, Reason, Source

NO_LIMIT = 1 << 62  # no created_at is ever future_dated here (rules.Decider.decide's latest_ms)


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

    header = codec.header(POST)
    start = time.perf_counter()
    decoded = []
    for value in values:
        try:
            if not value.startswith(header):
                continue  # the hot loop sends these to the DLQ without decoding
            decoded.append((value, fastpath.decode_post(value)))
        except fastpath.FastPathMiss:
            pass
    result["decode_fast_path"] = (time.perf_counter() - start) / count * 1e6

    sample = values[: min(count, 50_000)]
    start = time.perf_counter()
    for value in sample:
        try:
            codec.decode(value, POST)
        except Exception:
            pass
    result["decode_fastavro_reference"] = (time.perf_counter() - start) / len(sample) * 1e6

    # The rules and the Bloom filter cost well under a microsecond, so the harness's own loop (iterate,
    # unpack, index) is measured alone and subtracted: the figures are the calls themselves.
    source = Source.POST
    start = time.perf_counter()
    for _, f in decoded:
        _baseline(source, f[4], f[3], f[2], f[8], NO_LIMIT, f[1], _never)
    loop = (time.perf_counter() - start) / len(decoded) * 1e6
    decide = decider.decide
    start = time.perf_counter()
    for _, f in decoded:
        decide(source, f[4], f[3], f[2], f[8], NO_LIMIT, f[1], _never)
    result["rules"] = (time.perf_counter() - start) / len(decoded) * 1e6 - loop
    result["harness_loop_subtracted"] = loop

    # The filter holds pseudonyms: the service's membership test is the (memoised) HMAC, then the look-up.
    contains = optouts.contains
    pseudonymiser = Pseudonymiser(key)
    pseudonym_of = pseudonymiser.pseudonym

    def opted_out(user_id: bytes) -> bool:
        return bool(contains(pseudonym_of(user_id)))

    for _, f in decoded:
        opted_out(f[1])  # the memo filled, as in the steady state of the service
    start = time.perf_counter()
    for _, f in decoded:
        _nothing(f[1])
    loop = (time.perf_counter() - start) / len(decoded) * 1e6
    start = time.perf_counter()
    for _, f in decoded:
        opted_out(f[1])
    result["bloom_lookup"] = (time.perf_counter() - start) / len(decoded) * 1e6 - loop

    eligible = [
        (v, f)
        for v, f in decoded
        if decide(Source.POST, f[4], f[3], f[2], f[8], NO_LIMIT, f[1], opted_out) is Reason.ELIGIBLE
    ]
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
    per_eligible = (time.perf_counter() - start) / max(1, len(eligible)) * 1e6
    result["encode_and_pseudonymise_per_eligible"] = per_eligible
    result["encode_and_pseudonymise"] = per_eligible * len(eligible) / count

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
    # The cost of handing records to librdkafka (the hot loop's share), not the broker round trip.
    start = time.process_time()
    for out, pseudonym in outputs:
        try:
            producer.produce(topic, out, pseudonym)
        except BufferError:
            producer.poll(0.05)
            producer.produce(topic, out, pseudonym)
    per_eligible = (time.process_time() - start) / max(1, len(outputs)) * 1e6
    producer.flush(60)
    result["produce_per_eligible"] = per_eligible
    result["produce"] = per_eligible * len(outputs) / count
    result["eligible_share"] = len(eligible) / count
    return result
