"""The effectiveness report's series (consumer/audit/report_series.py) and what report_read.py makes of
the audit topic's records: pure, no Kafka."""

from __future__ import annotations

import pytest

from consumer.audit import receipts as contract
from consumer.audit.report_read import audit_records
from consumer.audit.report_series import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    Origin,
    Receipt,
    Recipient,
    Retraction,
    Snapshot,
    Verification,
    Window,
    latency,
    parse_window,
    percentile,
    receipt_series,
    recipients_lag,
    retraction_counts,
    verification_series,
)
from consumer.wire.codec import Codec
from tests import samples

UNTIL = 1_767_225_600_000  # 2026-01-01T00:00Z
WEEK = Window.ending(UNTIL, 7 * DAY_MS)
AUDIT_KEY = b"a" * 32


def at(bucket: int, offset_ms: int = 0, window: Window = WEEK) -> int:
    return window.start(bucket) + offset_ms


@pytest.mark.parametrize(
    ("text", "millis", "bucket_ms", "buckets"),
    [
        ("7d", 7 * DAY_MS, HOUR_MS, 168),
        ("24h", DAY_MS, 15 * MINUTE_MS, 96),
        ("90m", 90 * MINUTE_MS, MINUTE_MS, 90),
        ("30d", 30 * DAY_MS, 6 * HOUR_MS, 120),
        ("2w", 14 * DAY_MS, 6 * HOUR_MS, 56),
    ],
)
def test_a_window_is_cut_into_buckets_sized_to_it(text, millis, bucket_ms, buckets):
    window = Window.ending(UNTIL, parse_window(text))
    assert (window.until_ms - window.since_ms, window.bucket_ms, window.buckets) == (millis, bucket_ms, buckets)


@pytest.mark.parametrize("text", ["", "7", "d", "0d", "7 days", "-1d", "1.5h", "400d", "7D"])
def test_a_window_that_is_not_a_number_and_a_unit_is_refused_with_what_is_accepted(text):
    with pytest.raises(ValueError, match="--window"):
        parse_window(text)


def test_the_window_holds_its_start_and_not_its_end():
    assert WEEK.index(WEEK.since_ms) == 0
    assert WEEK.index(UNTIL - 1) == 167
    assert WEEK.index(UNTIL) is None
    assert WEEK.index(WEEK.since_ms - 1) is None


def receipt(decided_at: int, first: int, decisions: dict[str, int], dead: dict[str, int] | None = None) -> Receipt:
    return Receipt(decided_at, "posts.v1", 0, first, first + 9, tuple(decisions.items()), tuple((dead or {}).items()))


def test_decisions_are_summed_per_bucket_and_a_repeated_receipt_is_counted_once():
    receipts = [
        receipt(at(0, 10), 0, {"eligible": 7, "malformed": 1, "under_age": 2}, {"bad_body": 1}),
        receipt(at(0, 20), 10, {"eligible": 10}),
        receipt(at(0, 30), 10, {"eligible": 10}),  # a repeat of the range 10-19 after a crash
        receipt(at(5), 20, {"not_public": 4}, {}),
        receipt(WEEK.since_ms - 1, 30, {"eligible": 99}),  # before the window
    ]
    series = receipt_series(WEEK, receipts)
    assert list(series.decisions) == ["eligible", "malformed", "not_public", "under_age"]
    assert series.decisions["eligible"][0] == 17
    assert series.decisions["not_public"][5] == 4
    assert sum(series.decisions["eligible"]) == 17, "the one before the window is left out"
    assert series.dead_letters == {"bad_body": [1] + [0] * 167}
    assert (series.receipts, series.repeats) == (3, 1)


def test_percentiles_are_nearest_rank():
    values = sorted(float(v) for v in range(1, 101))
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile([3.0], 0.99)) == (50.0, 99.0, 3.0)


def test_each_optout_is_matched_with_its_first_revocation_after_it_once():
    origins = [Origin(at(1, s * 1000), (f"p{s}",)) for s in range(10)]
    retractions = [Retraction(o.at + (s + 1) * 1000, f"p{s}", "opted_out") for s, o in enumerate(origins[:9])]
    found = latency(WEEK, origins, retractions)
    assert found.matched[1] == 9
    assert found.waiting[1] == 1, "p9 has no revocation yet"
    assert (found.p50[1], found.p99[1], found.worst) == (5.0, 9.0, 9.0)
    assert found.p50[0] is None and not found.empty


def test_a_repeated_optout_is_already_in_force_and_a_revocation_serves_one_origin_only():
    first, again = Origin(at(2), ("p",)), Origin(at(3), ("p",))
    found = latency(WEEK, [first, again], [Retraction(at(2, 1500), "p", "opted_out")])
    assert (found.matched[2], found.waiting[3], found.already) == (1, 0, 1)
    # Two changes of one record id, each with its own retraction: each takes the first after it.
    two = latency(
        WEEK,
        [Origin(at(4), ("content/r",)), Origin(at(4, 100), ("content/r",))],
        [Retraction(at(4, 50), "content/r", "edited"), Retraction(at(4, 400), "content/r", "content_deleted")],
    )
    assert two.matched[4] == 2
    assert two.p99[4] == 0.3


def test_an_account_change_takes_the_earliest_of_its_keys_and_origins_outside_the_window_are_left_out():
    account = Origin(at(6), ("deleted/p", "account/p"))
    found = latency(
        WEEK,
        [account, Origin(UNTIL + 5, ("deleted/q",))],
        [
            Retraction(at(6, 9000), "account/p", "age_corrected"),
            Retraction(at(6, 2000), "deleted/p", "account_deleted"),
        ],
    )
    assert (found.matched[6], found.p50[6], sum(found.waiting)) == (1, 2.0, 0)


def test_no_origin_is_an_empty_latency_not_an_error():
    found = latency(WEEK, [], [Retraction(at(0), "p", "opted_out")])
    assert found.empty and found.worst is None and all(v is None for v in found.p99)


def test_retractions_are_counted_by_reason_in_their_bucket():
    counts = retraction_counts(
        WEEK,
        [Retraction(at(0), "a", "opted_out"), Retraction(at(0, 5), "b", "opted_out"), Retraction(at(9), "c", "edited")],
    )
    assert (counts["opted_out"][0], counts["edited"][9], sum(counts["edited"])) == (2, 1, 1)


def test_recipients_lag_is_the_largest_wait_of_each_group_over_the_replicas_snapshots():
    def snap(when: int, replica: str, waited: float | None) -> Snapshot:
        return Snapshot(
            when, replica, (Recipient("ml", True, 1, waited), Recipient("late", False, 9, 7200.0 if waited else None))
        )

    lag = recipients_lag(WEEK, [snap(at(1), "r1", 30.0), snap(at(1, 60_000), "r2", 90.0), snap(at(2), "r1", None)])
    assert lag.by_group["ml"][1:3] == [90.0, 0.0], "nothing waiting is 0 s, not a gap"
    assert lag.by_group["late"][1:3] == [7200.0, 0.0]
    assert lag.by_group["ml"][0] is None, "no snapshot: a gap"
    assert lag.snapshots == 3 and lag.last is not None and lag.last.taken_at == at(2)


def test_the_verifiers_last_result_is_the_last_to_finish_in_the_window():
    def run(finished: int, passed: bool) -> Verification:
        return Verification(finished - 60_000, finished, None, None, 10, 100, passed, (), 0 if passed else 2)

    series = verification_series(WEEK, [run(at(30), False), run(at(10), True), run(UNTIL + 1, True)])
    assert [r.finished_at for r in series.runs] == [at(10), at(30)]
    assert series.last is not None and series.last.passed is False


def test_audit_records_not_signed_correctly_are_counted_and_left_out():
    codec = Codec()
    good = contract.sign(codec, AUDIT_KEY, samples.RECEIPT)
    altered = {**good, "decisions": [{"name": "eligible", "records": 100}]}  # counts changed after signing
    verified = contract.sign(codec, AUDIT_KEY, samples.VERIFICATION, contract.VERIFICATION)
    snapshot = contract.sign(codec, b"b" * 32, samples.RECIPIENTS, contract.RECIPIENTS)  # another key
    records = [
        (b"receipt/posts.v1/3", codec.encode(contract.RECEIPT, good), 1),
        (b"receipt/posts.v1/3", codec.encode(contract.RECEIPT, altered), 2),
        (b"verification/1767225600000", codec.encode(contract.VERIFICATION, verified), 3),
        (b"recipients/r1", codec.encode(contract.RECIPIENTS, snapshot), 4),
        (b"receipt/posts.v1/3", b"\x00\x00\x00\x00\x0bnot avro", 5),
        (b"something-else", b"ignored", 6),
    ]
    checked = audit_records(codec, AUDIT_KEY, records)
    assert (len(checked.receipts), len(checked.verifications), len(checked.snapshots)) == (1, 1, 0)
    assert (checked.bad_signatures, checked.undecodable) == (2, 1)
    assert dict(checked.receipts[0].decisions) == {"eligible": 61, "malformed": 1, "not_public": 38}
    assert checked.receipts[0].decided_at == samples.RECEIPT["decided_at"]
    assert checked.verifications[0].discrepancies[0].kind == "gap"
    unchecked = audit_records(codec, None, records)
    assert (len(unchecked.receipts), len(unchecked.snapshots), unchecked.bad_signatures) == (2, 1, 0)
