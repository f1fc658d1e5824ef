"""The Python recipes of docs/recipes/python.md (confluent-kafka, with AvroDeserializer and the registry, or
fastavro and avro/catalog.json) against the clean topic and the retractions the real service wrote: the
table equals the oracle's set (tests/recipes/oracle.py)."""

from __future__ import annotations

import io
import json
import uuid

import fastavro
import pytest

from consumer.wire.codec import schema_dir
from tests.harness import Topics, produce, read_all
from tests.recipes import readme
from tests.recipes.stream import CleanStream

pytestmark = pytest.mark.integration


def check_kept(records: list[dict], stream: CleanStream) -> None:
    """The reader's table is the oracle's: exactly the records eligible under the current truth, once each."""
    ids = [r["record_id"] for r in records]
    assert len(ids) == len(set(ids)), "each record once"
    missing, unexpected = sorted(stream.expected_ids - set(ids)), sorted(set(ids) - stream.expected_ids)
    assert not missing and not unexpected, (
        f"missing (eligible now) {missing[:5]}; unexpected {[(i, stream.reasons.get(i)) for i in unexpected[:5]]}"
    )
    assert not {r["author_pseudonym"] for r in records} & stream.late_pseudonyms, "no record of a revoked author"
    for r in records:
        if r["source"] == "POST":
            assert r["text"] and r["prompt"] is None and r["response"] is None, r
        else:
            assert r["source"] == "AI_INTERACTION" and r["text"] is None and r["prompt"] and r["response"], r


@pytest.mark.parametrize(
    ("mode", "decoder"), [("registry", "python-decode-registry"), ("catalog", "python-decode-catalog")]
)
def test_python_recipe_keeps_exactly_the_eligible_records(kafka, request, tmp_path, mode, decoder):
    stream: CleanStream = request.getfixturevalue(f"{mode}_stream")
    code = readme.recipe(decoder, "python-reader")
    output = tmp_path / "clean.jsonl"
    env = {
        **stream.env(),
        "KAFKA_BOOTSTRAP": kafka.bootstrap,
        "READER_GROUP": f"ml-reader-{uuid.uuid4().hex[:8]}",
        "OUTPUT": str(output),
        "READ_SECONDS": "120",
    }
    if mode == "catalog":
        env.pop("SCHEMA_REGISTRY_URL", None)
    result = readme.run(code, env, tmp_path, timeout=180, name=f"python-{mode}")
    assert result.returncode == 0, result.output
    records = [json.loads(line) for line in output.read_text().splitlines()]
    check_kept(records, stream)
    assert f"{len(stream.expected_ids)} records kept" in result.output
    print(f"\npython recipe ({mode}): {len(records)} kept of {stream.facts}, {result.seconds:.1f} s")


def test_the_catalog_decoder_refuses_an_id_it_does_not_know(kafka, tmp_path):
    """A value framed with an id that is not in avro/catalog.json stops the reader; it is never guessed."""
    topics = Topics.unique(kafka.bootstrap, partitions=1)
    produce(kafka.bootstrap, [(topics.training, b"k", b"\x00\x00\x00\x03\xe7" + b"\x02ab")])
    code = readme.recipe("python-decode-catalog", "python-reader")
    env = {
        "TRAINING_TOPIC": topics.training,
        "REVOCATIONS_TOPIC": topics.revocations,
        "AVRO_DIR": str(schema_dir()),
        "KAFKA_BOOTSTRAP": kafka.bootstrap,
        "READER_GROUP": f"ml-reader-{uuid.uuid4().hex[:8]}",
        "OUTPUT": str(tmp_path / "clean.jsonl"),
        "READ_SECONDS": "120",
    }
    result = readme.run(code, env, tmp_path, timeout=180, name="python-unknown-id")
    assert result.returncode != 0 and "schema id 999 is not one this reader knows" in result.output, result.output


def test_a_version_1_reader_keeps_only_eligible_records_but_not_all_of_them(kafka, catalog_stream):
    """docs/retractions.md: a reader of Revocation v1 reads every retraction as an opt-out of its author
    and purges the author: on the safe side (a subset of the eligible records), and short of the truth
    on this stream, so the recipes' equality with the oracle needs the v2 rules."""
    catalog = json.loads((schema_dir() / "catalog.json").read_text())["schemas"]
    writers = {e["id"]: fastavro.parse_schema(json.loads((schema_dir() / e["file"]).read_text())) for e in catalog}
    v1 = fastavro.parse_schema(json.loads((schema_dir() / "revocation.v1.avsc").read_text()))

    def decode(value: bytes, reader=None) -> dict:
        return fastavro.schemaless_reader(io.BytesIO(value[5:]), writers[int.from_bytes(value[1:5], "big")], reader)

    revoked = {
        decode(m.value(), v1)["author_pseudonym"] for m in read_all(kafka.bootstrap, catalog_stream.topics.revocations)
    }
    records = [decode(m.value()) for m in read_all(kafka.bootstrap, catalog_stream.topics.training)]
    table = {r["record_id"] for r in records if r["author_pseudonym"] not in revoked}
    assert table <= catalog_stream.expected_ids, "never a retracted record"
    assert len(table) < len(catalog_stream.expected_ids), "the v1 reader purges more than the truth asks"
