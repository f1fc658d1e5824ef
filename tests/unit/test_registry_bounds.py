"""The registry's cost is bounded per batch on every topic the service reads, not only the inputs: a
flood of random schema ids on the opt-out or consent topic costs at most `lookups_per_batch` requests,
and what was not looked up is handled as each feed must (the key opts out; a consent is read again,
never taken for a withdrawal, which is for good)."""

from __future__ import annotations

import random

import pytest

from consumer.feeds.records import parse_consent, parse_optout
from consumer.wire.codec import CONSENT, OPTOUT, Codec, LookupDeferredError
from consumer.wire.registry import RegistrySettings, WriterSchema
from tests.fakes import Msg


class CountingRegistry:
    """A registry that holds the catalog's schemas under their catalog ids and nothing else."""

    def __init__(self, lookups_per_batch: int = 5) -> None:
        self.settings = RegistrySettings(url="http://127.0.0.1:1", lookups_per_batch=lookups_per_batch)
        self.asked: list[int] = []
        self.texts = {e.id: e.text for e in Codec().catalog.entries()}

    def writer_schema(self, schema_id: int) -> WriterSchema | None:
        self.asked.append(schema_id)
        text = self.texts.get(schema_id)
        return WriterSchema(text) if text else None


def record(value: bytes) -> Msg:
    return Msg("optouts", value, b"u1", timestamp=1_790_000_000_123)


def reframed(value: bytes, schema_id: int) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + value[5:]


def test_a_flood_of_random_ids_costs_at_most_the_batch_bound_and_the_real_id_comes_first():
    registry = CountingRegistry(lookups_per_batch=5)
    codec = Codec(registry=registry)  # type: ignore[arg-type]
    optout = Codec().encode(OPTOUT, {"user_id": "u1", "opted_out_at": 0, "source": "form"})
    real_id = int.from_bytes(optout[1:5], "big")
    rng = random.Random(3)
    flood = [reframed(optout, rng.randrange(1000, 2**31)) for _ in range(500)]
    codec.resolve_values([*flood, *([optout] * 3)])
    assert len(registry.asked) == 5 and registry.asked[0] == real_id


def test_an_optout_whose_id_was_not_looked_up_opts_out_its_key():
    codec = Codec(registry=CountingRegistry())  # type: ignore[arg-type]
    optout = reframed(Codec().encode(OPTOUT, {"user_id": "u1", "opted_out_at": 0, "source": "form"}), 4242)
    users, _, result = parse_optout(codec, record(optout), lookup=False)
    assert users == [b"u1"] and result == "undecodable_used_key"
    assert codec.registry.asked == []  # type: ignore[union-attr]


def test_a_consent_whose_id_was_not_looked_up_is_read_again_never_withdrawn():
    codec = Codec(registry=CountingRegistry())  # type: ignore[arg-type]
    grant = Codec().encode(CONSENT, {"user_id": "u1", "granted": True, "at": 0, "source": "dialog"})
    with pytest.raises(LookupDeferredError):
        parse_consent(codec, record(reframed(grant, 4242)), lookup=False)
    assert parse_consent(codec, record(grant), lookup=True)[1] is True  # looked up: the grant stands
