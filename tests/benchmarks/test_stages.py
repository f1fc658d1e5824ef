"""The benchmark's per-stage profile on a small input, against the real broker: it must keep running
as the rules' signature changes (the `make bench` step after the latency runs), and every stage it
reports must be a figure."""

from __future__ import annotations

import math
import uuid

import pytest

from consumer.datapath.pseudonym import Pseudonymiser
from consumer.devtools.generator import StreamGenerator
from consumer.devtools.topics import TopicSpec, ensure_topics
from consumer.optouts.filter import OptOutFilter
from consumer.wire.codec import OPTOUT, Codec
from rules import Decider, load_policy
from tests.benchmarks.stages import profile

pytestmark = pytest.mark.integration  # against the real broker

KEY = b"k" * 64


def test_profile_reports_every_stage(kafka) -> None:  # type: ignore[no-untyped-def]
    generator = StreamGenerator(seed=7, users_per_pool=500, ai_share=0.0)
    values = [g.value for g in generator.stream(3000)]
    optouts = OptOutFilter(10_000, 1e-6)
    pseudonym = Pseudonymiser(KEY).pseudonym
    codec = Codec()
    for _, value in generator.optouts():
        optouts.add(pseudonym(codec.decode(value, OPTOUT)[1]["user_id"].encode()))
    topic = f"bench-stages-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 1, {})])

    stages = profile(values, optouts, Decider(load_policy()), kafka.bootstrap, topic, KEY)

    for name in ("decode_fast_path", "decode_fastavro_reference", "encode_and_pseudonymise", "produce"):
        assert stages[name] > 0, name
    # The rules and the look-up are net of the harness's loop: small, possibly a little negative.
    assert all(math.isfinite(v) for v in stages.values())
    assert 0.2 < stages["eligible_share"] < 0.8
