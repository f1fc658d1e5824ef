"""A record dated later than the service's clock plus the skew allowance is refused (`future_dated`) by
the hot loop's fast and reference paths alike, and `training-filter check` gives the same reason."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import orjson

from consumer.wire.codec import POST, Codec
from rules import Reason, Source
from tests.fakes import Msg, processor, run
from tests.samples import ADULT_POST

CHECK = [sys.executable, "-m", "consumer.cli", "check", "--source", "post"]
NOW = dt.datetime(2026, 12, 3, 10, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
CHILD_IN_2040 = {
    **ADULT_POST,
    "author_birth_date": (dt.date(2012, 5, 1) - dt.date(1970, 1, 1)).days,  # 14 on the day of the test
    "created_at": int(dt.datetime(2040, 1, 1, tzinfo=dt.UTC).timestamp() * 1000),
}


def decided(created_ms: int, reference_path: bool, skew_ms: int = 300_000) -> dict[tuple[Source, str], int]:
    proc, _producer = processor()
    proc.clock = lambda: NOW.timestamp()
    proc.clock_skew_ms = skew_ms
    if reference_path:
        proc.routes["posts"].fast_headers.clear()
    value = Codec().encode(POST, {**ADULT_POST, "created_at": created_ms})
    return run(proc, [Msg("posts", value)])


def test_a_childs_post_stamped_2040_is_future_dated_on_both_paths():
    for reference_path in (False, True):
        proc, producer = processor()
        proc.clock = lambda: NOW.timestamp()
        if reference_path:
            proc.routes["posts"].fast_headers.clear()
        assert run(proc, [Msg("posts", Codec().encode(POST, CHILD_IN_2040))]) == {(Source.POST, "future_dated"): 1}
        assert producer.sent == []


def test_the_skew_allowance_is_inclusive_on_both_paths():
    for reference_path in (False, True):
        assert decided(NOW_MS + 300_000, reference_path) == {(Source.POST, "eligible"): 1}
        assert decided(NOW_MS + 300_001, reference_path) == {(Source.POST, "future_dated"): 1}
        assert decided(NOW_MS + 1, reference_path, skew_ms=0) == {(Source.POST, "future_dated"): 1}


def test_check_gives_the_same_reason_at_the_given_time():
    lines = [
        {**ADULT_POST, "author_birth_date": "2012-05-01", "created_at": "2040-01-01T00:00:00Z"},
        {**ADULT_POST, "post_id": "p-2", "author_birth_date": "1990-05-01", "created_at": NOW_MS + 300_000},
        {**ADULT_POST, "post_id": "p-3", "author_birth_date": "1990-05-01", "created_at": NOW_MS + 300_001},
        {**ADULT_POST, "post_id": "p-4", "author_birth_date": "1990-05-01", "created_at": "2026-12-01T00:00:00Z"},
    ]
    stdin = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    result = subprocess.run(
        [*CHECK, "--now", NOW.isoformat()],
        input=stdin,
        capture_output=True,
        check=True,
    )
    got = [orjson.loads(line)["decision"] for line in result.stdout.splitlines()]
    assert got == [Reason.FUTURE_DATED, Reason.ELIGIBLE, Reason.FUTURE_DATED, Reason.ELIGIBLE]
    skewless = subprocess.run(
        [*CHECK, "--now", str(NOW_MS), "--clock-skew-seconds", "0"],
        input=stdin,
        capture_output=True,
        check=True,
    )
    assert [orjson.loads(x)["decision"] for x in skewless.stdout.splitlines()][1] == Reason.FUTURE_DATED


def test_check_refuses_a_bad_time_with_exit_2():
    result = subprocess.run(
        [*CHECK, "--now", "yesterday"],
        input=b"",
        capture_output=True,
        check=False,
    )
    assert result.returncode == 2 and b"--now" in result.stderr
