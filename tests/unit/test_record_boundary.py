"""The error boundary is one record: whatever a record provokes on the reference path, it becomes a dead
letter with a cause and the batch goes on; and re-writing a refused output never needs the registry."""

from __future__ import annotations

from typing import Any

from consumer.datapath.offsets import PendingBatch, Rejected
from consumer.wire.codec import POST, TRAINING_RECORD, Codec
from consumer.wire.registry import RegistrySettings, RegistryUnavailable
from rules import Source
from tests.fakes import Msg, processor, run
from tests.samples import ADULT_POST


class ExplodingCodec(Codec):
    """Decodes like the reference codec, but one value provokes an error no check foresaw."""

    def __init__(self, poison: bytes) -> None:
        super().__init__()
        self.poison = poison

    def decode(self, data: bytes | None, reader_name: str | None = None, lookup: bool = True) -> Any:
        if data == self.poison:
            raise RuntimeError("a defect")
        return super().decode(data, reader_name, lookup)


def test_an_exception_on_the_reference_path_dead_letters_that_record_only():
    good = Codec().encode(POST, ADULT_POST)
    poison = Codec().encode(POST, {**ADULT_POST, "post_id": "p-poison"})
    proc, producer = processor(ExplodingCodec(poison))
    proc.routes["posts"].fast_headers.clear()  # every record on the reference path
    tally = run(proc, [Msg("posts", poison, offset=1), Msg("posts", good, offset=2), Msg("posts", good, offset=3)])
    assert tally == {(Source.POST, "eligible"): 2, (Source.POST, "malformed"): 1}
    letters = [dict(h) for topic, _v, _k, h in producer.sent if topic == "dlq"]
    assert [h["tf.cause"] for h in letters] == [b"undecidable"] and letters[0]["tf.source.offset"] == b"1"
    assert proc.undecidable == {"RuntimeError": 1}


class DownRegistry:
    """A registry that gave the output schema's id at start-up and has been unreachable since."""

    settings = RegistrySettings(url="http://127.0.0.1:1")

    def output_id(self, subject: str, avsc_text: str, matches: Any) -> int:
        return 77

    def __getattr__(self, name: str) -> Any:
        def unreachable(*_args: Any, **_kwargs: Any) -> Any:
            raise RegistryUnavailable("ConnectionRefusedError looking up schema id 77")

        return unreachable


def test_a_refused_output_is_written_again_during_a_registry_outage():
    """Re-reading a refused TrainingRecord's provenance asked the registry for the service's own schema:
    an outage then raised out of the delivery bookkeeping and stopped the service."""
    codec = Codec(registry=DownRegistry())  # type: ignore[arg-type]
    codec.prepare_write(TRAINING_RECORD, "training-value")
    proc, producer = processor(codec)
    value = Codec().encode(POST, ADULT_POST)
    proc.routes["posts"].fast_headers.add(value[:5])  # the catalog id stands for v1 here
    run(proc, [Msg("posts", value, offset=9)])
    (_topic, out, key, _headers), *_ = producer.sent
    assert proc.training_provenance(out) == ("posts", 0, 9)
    batch = PendingBatch()
    batch.rejected.append(Rejected("training", out, key, None, None, "MSG_SIZE_TOO_LARGE"))
    proc.replace_refused(batch)  # one more attempt, by its provenance
    assert producer.sent[-1][0] == "training" and producer.sent[-1][1] == out


class OneSchemaRegistry:
    """A registry that holds one evolved Post schema (id 9) and gave the outputs id 77."""

    settings = RegistrySettings(url="http://127.0.0.1:1")

    def __init__(self, text: str) -> None:
        self.text = text

    def output_id(self, subject: str, avsc_text: str, matches: Any) -> int:
        return 77

    def writer_schema(self, schema_id: int) -> Any:
        from consumer.wire.registry import WriterSchema

        return WriterSchema(self.text) if schema_id == 9 else None


def test_an_eligible_record_of_an_evolved_registry_schema_is_emitted():
    """The reference path writes an eligible record as v1 to build its output; in registry mode the codec
    has no id of its own for v1 (inputs are never registered), and the record was dead-lettered."""
    import copy
    import io
    import json

    import fastavro

    v2 = copy.deepcopy(json.loads(Codec().catalog.by_name(POST).text))
    v2["fields"].append({"name": "mood", "type": ["null", "string"], "default": None})
    codec = Codec(registry=OneSchemaRegistry(json.dumps(v2)))  # type: ignore[arg-type]
    codec.prepare_write(TRAINING_RECORD, "training-value")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(v2, named_schemas={}), {**ADULT_POST, "mood": "calm"})
    value = b"\x00" + (9).to_bytes(4, "big") + body.getvalue()
    proc, producer = processor(codec)
    proc.resolve_schemas([Msg("posts", value)])
    assert run(proc, [Msg("posts", value, offset=4)]) == {(Source.POST, "eligible"): 1}
    record = codec.decode_own(producer.sent[0][1], TRAINING_RECORD)
    assert record["record_id"] == "p-1" and record["text"] == "hallo welt" and record["source_offset"] == 4
