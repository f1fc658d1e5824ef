"""The fault-injection suite in its short form (CI). `make faults` runs the long form."""

from __future__ import annotations

import pytest

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
from tests.faults.run import SHORT

pytestmark = pytest.mark.integration


def check(row: scenarios.Row) -> None:
    print()
    print(scenarios.table([row]))
    assert row.missing == 0, "eligible records are missing"
    assert row.ineligible_emitted == 0, "ineligible records reached the training topic"
    if not row.duplicates_allowed:
        assert row.duplicates == 0
    assert not row.failures, row.failures


def test_revocations_topic_set_to_the_optout_topic_is_refused_and_touches_nothing(broker, tmp_path):
    check(settings_scenarios.revocations_topic_is_the_optout_topic(broker, tmp_path, SHORT["records"] // 4))


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_kill_nine_mid_stream(broker, tmp_path, guarantee):
    check(scenarios.kill_nine(broker, tmp_path, SHORT["records"], SHORT["kills"], guarantee))


def test_broker_restart_mid_stream(broker, tmp_path):
    check(scenarios.broker_restart(broker, tmp_path, SHORT["records"]))


def test_optout_feed_outage_pauses_input(broker, tmp_path):
    check(scenarios.optout_feed_outage(broker, tmp_path, SHORT["records"]))


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_rebalance_mid_stream(broker, tmp_path, guarantee):
    check(scenarios.rebalance(broker, tmp_path, SHORT["records"], guarantee))


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
def test_feed_outage_then_scale_out_then_kill_nine(broker, tmp_path, guarantee):
    check(output_scenarios.outage_scale_out_kill(broker, tmp_path, SHORT["records"], guarantee))


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_values_near_every_size_limit(broker, tmp_path, guarantee):
    check(output_scenarios.large_values(broker, tmp_path, SHORT["records"] // 4, guarantee))


def test_an_optout_after_an_open_transaction_is_applied(broker, tmp_path):
    check(optout_scenarios.hanging_transaction(broker, tmp_path, SHORT["records"]))


def test_optouts_on_new_partitions_are_applied(broker, tmp_path):
    check(optout_scenarios.partitions_grow(broker, tmp_path, SHORT["records"]))


def test_a_fresh_replica_after_a_tombstone_and_compaction_still_honours_the_optout(broker, tmp_path):
    check(optout_scenarios.tombstone_then_fresh_replica(broker, tmp_path, SHORT["records"]))


def test_a_snapshot_ahead_of_a_recreated_topic_is_not_resumed(broker, tmp_path):
    check(optout_scenarios.snapshot_of_a_recreated_topic(broker, tmp_path, SHORT["records"]))


def test_input_flows_with_300_optout_partitions_behind_a_slow_link(tmp_path):
    check(scale_scenarios.many_partitions_behind_latency(tmp_path, SHORT["records"]))


def test_each_alert_fires_under_its_fault_on_a_real_prometheus(broker, tmp_path):
    row, phases = alert_scenarios.alerts_under_faults(broker, tmp_path, SHORT["records"])
    print()
    print(alert_scenarios.table(phases))
    check(row)


@pytest.mark.parametrize(
    "scenario",
    [
        registry_scenarios.uuid_logical_type,
        registry_scenarios.nameless_schema,
        registry_scenarios.one_id_refused,
        registry_scenarios.id_registered_late,
    ],
    ids=["uuid-logical-type", "nameless-schema", "one-id-refused", "id-registered-late"],
)
def test_registry_answers_never_stop_stall_or_lose(broker, registry, tmp_path, scenario):
    check(scenario(broker, tmp_path, registry.url, SHORT["records"] // 2))


# -- issue 22: a reader's table against the truth ----------------------------------------------------


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_kill_nine_in_a_retraction_burst_leaves_the_reader_the_truth(broker, tmp_path, guarantee):
    check(change_scenarios.kill_nine_in_a_retraction_burst(broker, tmp_path, SHORT["records"] // 2, 3, guarantee))


def test_a_rebalance_while_changes_arrive_leaves_the_reader_the_truth(broker, tmp_path):
    check(change_scenarios.rebalance_with_changes(broker, tmp_path, SHORT["records"] // 2, "exactly-once"))


def test_a_change_feed_outage_pauses_input_and_loses_no_change(broker, tmp_path):
    check(change_scenarios.change_feed_outage(broker, tmp_path, SHORT["records"] // 2))


def test_a_fresh_replica_after_a_content_change_is_compacted_away_still_stops_its_record(broker, tmp_path):
    check(change_scenarios.change_compacted_away_then_fresh_replica(broker, tmp_path, SHORT["records"] // 2))
