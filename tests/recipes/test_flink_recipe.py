"""The Flink SQL recipe of docs/recipes/flink.md (PyFlink, the Kafka connector with read_committed, the
avro-confluent format with the registry, ROW_NUMBER de-duplication, NOT EXISTS the retractions in force)
against the topics the real service wrote (the table equals the oracle's set, tests/recipes/oracle.py),
with the reader schema Flink derives from the table's columns (TrainingRecord v2 has no enum, which Flink
could not resolve: FLINK-24544); what Flink makes of v1 and v2."""

from __future__ import annotations

import json

import pytest

from consumer.wire.codec import schema_dir
from tests.recipes import jars, readme
from tests.recipes.stream import CleanStream
from tests.recipes.test_python_recipe import check_kept

pytestmark = pytest.mark.integration

# What Flink's own converter (AvroSchemaConverter, in flink-sql-avro-confluent-registry) derives.
ACCEPTANCE = """
import json, os
from pyflink.java_gateway import get_gateway
from pyflink.util.java_utils import add_jars_to_context_class_loader

add_jars_to_context_class_loader(os.environ["FLINK_JARS"].split(";"))
converter = get_gateway().jvm.org.apache.flink.formats.avro.typeutils.AvroSchemaConverter
for name in ("training_record.v1.avsc", "training_record.v2.avsc", "revocation.v1.avsc"):
    text = open(os.path.join(os.environ["AVRO_DIR"], name)).read()
    print("TYPE " + json.dumps({"file": name, "type": converter.convertToDataType(text).toString()}))
"""


def flink_env(kafka, stream: CleanStream, output) -> dict[str, str]:
    return {
        **stream.env(),
        "KAFKA_BOOTSTRAP": kafka.bootstrap,
        "FLINK_JARS": jars.pipeline_jars(jars.flink_jars()),
        "OUTPUT": str(output),
    }


def read_json_output(folder) -> list[dict]:
    files = [f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")]
    assert files, f"the Flink job wrote nothing to {folder}"
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line]


def test_flink_recipe_keeps_exactly_the_eligible_records(kafka, registry_stream, tmp_path):
    output = tmp_path / "clean"
    result = readme.run(
        readme.recipe("flink-registry"), flink_env(kafka, registry_stream, output), tmp_path, 600, "flink-registry"
    )
    assert result.returncode == 0, result.output[-6000:]
    records = read_json_output(output)
    check_kept(records, registry_stream)
    print(f"\nflink recipe (registry): {len(records)} kept, {result.seconds:.1f} s")


def test_the_recipe_gives_flink_no_reader_schema_by_hand():
    assert "avro-confluent.schema" not in readme.recipe("flink-registry"), "v2 needs none: it has no enum"


def test_flink_maps_every_v2_field_to_a_sql_type_and_v1_text_to_none(tmp_path):
    env = {"FLINK_JARS": jars.pipeline_jars(jars.flink_jars()), "AVRO_DIR": str(schema_dir())}
    result = readme.run(ACCEPTANCE, env, tmp_path, 300, "flink-acceptance")
    assert result.returncode == 0, result.output[-4000:]
    types = {
        t["file"]: t["type"]
        for t in (json.loads(line[5:]) for line in result.output.splitlines() if line.startswith("TYPE "))
    }
    assert types["training_record.v2.avsc"] == (
        "ROW<`record_id` STRING NOT NULL, `source` STRING NOT NULL, `text` STRING, `prompt` STRING, "
        "`response` STRING, `language` STRING, `country` STRING NOT NULL, `created_at` TIMESTAMP(3) NOT NULL, "
        "`author_pseudonym` STRING NOT NULL, `policy_version` STRING NOT NULL, `source_topic` STRING NOT NULL, "
        "`source_partition` INT NOT NULL, `source_offset` BIGINT NOT NULL> NOT NULL"
    )
    # v1's text, a union of a string and a record, has no SQL type: Flink falls back to an opaque RAW.
    assert "`text` RAW('java.lang.Object', ?) NOT NULL" in types["training_record.v1.avsc"]
    assert types["revocation.v1.avsc"] == (
        "ROW<`author_pseudonym` STRING NOT NULL, `opted_out_at` TIMESTAMP(3) NOT NULL> NOT NULL"
    )
