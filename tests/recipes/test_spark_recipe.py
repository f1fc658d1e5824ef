"""The Spark recipe of docs/recipes/spark.md (PySpark batch, the Kafka source with read_committed, from_avro
past the 5-byte header, dropDuplicates on record_id, anti-joins with the retractions in force), with the
registry's writer schemas and with avro/catalog.json's, against the topics the real service wrote: the
table equals the oracle's set (tests/recipes/oracle.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.recipes import readme
from tests.recipes.stream import CleanStream
from tests.recipes.test_python_recipe import check_kept

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("mode", "schemas"), [("registry", "spark-schemas-registry"), ("catalog", "spark-schemas-catalog")]
)
def test_spark_recipe_keeps_exactly_the_eligible_records(kafka, request, tmp_path, mode, schemas):
    stream: CleanStream = request.getfixturevalue(f"{mode}_stream")
    code = readme.recipe(schemas, "spark-reader")
    output = tmp_path / "clean.parquet"
    env = {**stream.env(), "KAFKA_BOOTSTRAP": kafka.bootstrap, "OUTPUT": str(output)}
    if mode == "catalog":
        env.pop("SCHEMA_REGISTRY_URL", None)
    result = readme.run(code, env, tmp_path, timeout=600, name=f"spark-{mode}")
    assert result.returncode == 0, result.output[-6000:]
    import pyarrow.parquet as pq  # the [recipes] extra (conftest fails the test, saying so, without it)

    table = pq.read_table(output)
    records = table.to_pylist()
    check_kept(records, stream)
    assert f"{len(stream.expected_ids)} records kept" in result.output
    # The columns are v2's fields with their types: a nullable string for every [null, string] union,
    # source as a string, timestamp-millis as a timestamp.
    types = {f.name: (str(f.type), f.nullable) for f in table.schema}
    assert types["text"] == ("string", True) and types["prompt"] == ("string", True)
    assert types["source"][0] == "string" and types["created_at"][0].startswith("timestamp")
    assert all(isinstance(r["created_at"], dt.datetime) for r in records)
    print(f"\nspark recipe ({mode}): {len(records)} kept, {result.seconds:.1f} s")
