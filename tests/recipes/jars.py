"""The Maven Central jars of the Flink recipe: `flink-jars.pom.xml`'s two self-contained SQL jars, copied
by `mvn dependency:copy-dependencies` into a cache folder keyed by the pom's hash (fetched once).
The Spark recipe needs nothing from here: its `spark.jars.packages` are resolved by Spark's own Ivy
(from Maven Central, cached in ~/.ivy2.5.2)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from consumer.devtools.local_kafka import CACHE_DIR

FLINK_POM = Path(__file__).with_name("flink-jars.pom.xml")
FLINK_JARS = ("flink-sql-connector-kafka-5.0.0-2.2.jar", "flink-sql-avro-confluent-registry-2.2.0.jar")


def flink_jars(timeout: float = 600.0) -> list[Path]:
    digest = hashlib.sha256(FLINK_POM.read_bytes()).hexdigest()[:16]
    folder = CACHE_DIR / f"recipe-flink-jars-{digest}"
    if not (folder / ".complete").is_file():
        if shutil.which("mvn") is None:
            raise AssertionError("Maven (mvn) is not on PATH: it fetches the Flink connector jars from Maven Central")
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        cmd = [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(FLINK_POM),
            "dependency:copy-dependencies",
            "-DexcludeTransitive=true",
            f"-DoutputDirectory={partial}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"fetching the Flink jars failed ({' '.join(cmd)}):\n{result.stdout}\n{result.stderr}")
        (partial / ".complete").write_text("ok\n")
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    jars = [folder / name for name in FLINK_JARS]
    missing = [j.name for j in jars if not j.is_file()]
    assert not missing, f"{folder} lacks {missing}: remove the folder to fetch again"
    return jars


def pipeline_jars(jars: list[Path]) -> str:
    """Flink's `pipeline.jars`: file URLs separated by ';'."""
    return ";".join(j.resolve().as_uri() for j in jars)
