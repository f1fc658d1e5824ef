"""The fault-injection suite in its short form (CI). `make faults` runs the long form."""

from __future__ import annotations

import pytest

from tests.faults import scenarios
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
