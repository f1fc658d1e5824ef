"""`make faults`: every fault scenario against a dedicated local broker; prints the table.

    python -m tests.faults.run [--short]

Exit status 1 when any scenario has a missing or ineligible record (or a duplicate where the
guarantee forbids one). The short form is what CI runs through tests/faults/test_faults.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from consumer.devtools.local_kafka import LocalKafka
from consumer.devtools.local_registry import LocalRegistry
from tests.faults import (
    alert_scenarios,
    change_scenarios,
    optout_scenarios,
    output_scenarios,
    registry_scenarios,
    scale_scenarios,
    scenarios,
    settings_scenarios,
)
from tests.faults.scenarios import SECOND_PASSWORD, SECOND_USER, SERVICE_PASSWORD, SERVICE_USER

LONG = {"records": 20_000, "kills": 8}
SHORT = {"records": 4_000, "kills": 5}


def fault_broker() -> LocalKafka:
    # The log cleaner looks every second (default 15 s): the tombstone scenario waits for compaction.
    return LocalKafka(
        secure=True,
        scram_users={SERVICE_USER: SERVICE_PASSWORD, SECOND_USER: SECOND_PASSWORD},
        extra_properties={"log.cleaner.backoff.ms": "1000"},
    )


def run_all(broker: LocalKafka, workdir: Path, size: dict[str, int], registry_url: str) -> list[scenarios.Row]:
    records, kills = size["records"], size["kills"]
    steps = [
        lambda: settings_scenarios.revocations_topic_is_the_optout_topic(broker, workdir, records // 4),
        lambda: scenarios.kill_nine(broker, workdir, records, kills, "at-least-once"),
        lambda: scenarios.kill_nine(broker, workdir, records, kills, "exactly-once"),
        lambda: scenarios.broker_restart(broker, workdir, records),
        lambda: scenarios.optout_feed_outage(broker, workdir, records),
        lambda: scenarios.rebalance(broker, workdir, records, "at-least-once"),
        lambda: scenarios.rebalance(broker, workdir, records, "exactly-once"),
        lambda: output_scenarios.outage_scale_out_kill(broker, workdir, records, "exactly-once"),
        lambda: output_scenarios.outage_scale_out_kill(broker, workdir, records, "at-least-once"),
        lambda: output_scenarios.large_values(broker, workdir, records // 4, "at-least-once"),
        lambda: output_scenarios.large_values(broker, workdir, records // 4, "exactly-once"),
        lambda: optout_scenarios.hanging_transaction(broker, workdir, records),
        lambda: optout_scenarios.partitions_grow(broker, workdir, records),
        lambda: optout_scenarios.tombstone_then_fresh_replica(broker, workdir, records),
        lambda: optout_scenarios.snapshot_of_a_recreated_topic(broker, workdir, records),
        # A broker of its own, behind a latency proxy (the fault broker has no proxied listener).
        lambda: scale_scenarios.many_partitions_behind_latency(workdir, records),
        lambda: registry_scenarios.uuid_logical_type(broker, workdir, registry_url, records // 2),
        lambda: registry_scenarios.nameless_schema(broker, workdir, registry_url, records // 2),
        lambda: registry_scenarios.one_id_refused(broker, workdir, registry_url, records // 2),
        lambda: registry_scenarios.id_registered_late(broker, workdir, registry_url, records // 2),
        lambda: change_scenarios.kill_nine_in_a_retraction_burst(broker, workdir, records, kills, "at-least-once"),
        lambda: change_scenarios.kill_nine_in_a_retraction_burst(broker, workdir, records, kills, "exactly-once"),
        lambda: change_scenarios.rebalance_with_changes(broker, workdir, records, "at-least-once"),
        lambda: change_scenarios.rebalance_with_changes(broker, workdir, records, "exactly-once"),
        lambda: change_scenarios.change_feed_outage(broker, workdir, records),
        lambda: change_scenarios.change_compacted_away_then_fresh_replica(broker, workdir, records),
        lambda: _alerts(broker, workdir, records),
    ]
    rows = []
    for step in steps:
        started = time.monotonic()
        row = step()
        row.notes.append(f"took {time.monotonic() - started:.0f} s")
        print(f"[faults] {row.scenario}: {'ok' if row.ok else 'FAILED'}", flush=True)
        rows.append(row)
    return rows


def _alerts(broker: LocalKafka, workdir: Path, records: int) -> scenarios.Row:
    row, phases = alert_scenarios.alerts_under_faults(broker, workdir, records)
    print(alert_scenarios.table(phases), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="the CI size")
    args = parser.parse_args(argv)
    registry = LocalRegistry().start()  # the registry scenarios' (Apicurio, built on first use)
    try:
        with tempfile.TemporaryDirectory(prefix="tf-faults-") as work, fault_broker() as broker:
            rows = run_all(broker, Path(work), SHORT if args.short else LONG, registry.url)
    finally:
        registry.cleanup()
    print()
    print(scenarios.table(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
