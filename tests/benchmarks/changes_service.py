"""The cost of carrying the change set in the real service (issue 22: under 5 % more CPU per record):
the service with empty change topics against the same service whose change topics hold `stopped`
content changes (of record ids the input does not have) and `corrected` account corrections (of users
it does not have), alternating, on the benchmark's input. The change set is read at start-up (before
the timed part), so what is compared is the decide path with a full set against an empty one.

Result: `changes_service` (the paired CPU ratio, its spread, and both variants' figures).
"""

from __future__ import annotations

import statistics
from typing import Any

from consumer.wire.codec import ACCOUNT_CHANGE, CONTENT_CHANGE, Codec
from tests.benchmarks.harness import Harness, log, paired_cpu_ratios, summarise
from tests.benchmarks.service import alternating_runs


def run(h: Harness, repetitions: int, stopped: int = 1_000_000, corrected: int = 100_000) -> dict[str, Any]:
    if h.args.quick:
        stopped, corrected = 20_000, 2_000
    full = filled_topics(h, stopped, corrected)
    runs = alternating_runs(h, "change set", {"empty": {}, "carrying": full}, repetitions)
    paired = paired_cpu_ratios(runs["empty"], runs["carrying"])
    return {
        "repetitions": repetitions,
        "stopped_record_ids": stopped,
        "corrected_accounts": corrected,
        "empty": summarise(runs["empty"]),
        "carrying": summarise(runs["carrying"]),
        "cpu_ratio_paired": statistics.median(paired),
        "cpu_ratio_paired_min_max": [paired[0], paired[-1]],
    }


def filled_topics(h: Harness, stopped: int, corrected: int) -> dict[str, str]:
    """Change topics of their own, filled: the environment of the carrying variant."""
    log(f"publishing {stopped:,} content changes and {corrected:,} account corrections")
    codec = Codec()
    content = h.topic("content-changes-full", 1, {"cleanup.policy": "compact"})
    accounts = h.topic("account-changes-full", 1, {"cleanup.policy": "compact"})
    at = 1_790_000_000_000
    for start in range(0, stopped, 100_000):
        batch = []
        for i in range(start, min(stopped, start + 100_000)):
            record_id = f"bench-changed-{i:09d}"
            change = {"record_id": record_id, "user_id": f"bench-author-{i % 50_000}", "change": "DELETED"}
            value = codec.encode(CONTENT_CHANGE, {**change, "at": at, "source": "bench"})
            batch.append((record_id.encode(), value))
        h.produce(content, batch)
    batch = []
    for i in range(corrected):
        user = f"bench-corrected-{i:07d}"
        facts = {"user_id": user, "deleted": False, "birth_date": None, "country": "DE"}
        batch.append((user.encode(), codec.encode(ACCOUNT_CHANGE, {**facts, "at": at, "source": "bench"})))
    h.produce(accounts, batch)
    return {"TF_CONTENT_CHANGES_TOPIC": content, "TF_ACCOUNT_CHANGES_TOPIC": accounts}
