"""The opt-in scenario: the real service under the opt-in model (deploy/kubernetes/components/
opt-in-consent's policy) against the same service under the packaged opt-out policy, `--repeat`
alternating pairs of runs on the same input.

Every user of the input consented (so the same records are eligible and a run ends on the same
counts, and every record that passes the other checks is looked up), and the consent set is sized as
the component sizes it (TF_CONSENT_CAPACITY 10 million, a 128 MiB table) and holds 5 million consents
(200,000 with `--quick`): the input's users from the consent topic, the rest random fingerprints,
loaded from a snapshot as a restarted replica loads it.

Result: `opt_in_service`.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from consumer.consents import snapshot as consent_snapshot
from consumer.consents.fingerprints import ConsentSet
from consumer.consents.history import ConsentHistory
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.optouts.filter import write_snapshot
from consumer.wire.codec import CONSENT, Codec
from tests.benchmarks.consents import random_words
from tests.benchmarks.harness import Harness, paired_cpu_ratios, summarise
from tests.benchmarks.service import alternating_runs

OPT_IN_POLICY = "deploy/kubernetes/components/opt-in-consent/opt-in-policy.toml"
CAPACITY = 10_000_000
WITHDRAWALS_CAPACITY = 100_000  # TF_CONSENT_WITHDRAWALS_CAPACITY's default: the snapshot must match it


def run(h: Harness, repetitions: int) -> dict[str, Any]:
    entries = 5_000_000 if not h.args.quick else 200_000
    runs = alternating_runs(h, "opt-in", {"opt_out": {}, "opt_in": opt_in_env(h, entries)}, repetitions)
    paired = paired_cpu_ratios(runs["opt_out"], runs["opt_in"])
    return {
        "repetitions": repetitions,
        "consent_capacity": CAPACITY,
        "consent_entries": entries,
        "input_users": len(h.users),
        "opt_out": summarise(runs["opt_out"]),
        "opt_in": summarise(runs["opt_in"]),
        "cpu_ratio_paired": statistics.median(paired),
        "cpu_ratio_paired_min_max": [paired[0], paired[-1]],
    }


def opt_in_env(h: Harness, entries: int) -> dict[str, str]:
    """The opt-in policy file, a consent topic granting every input user, and a consent snapshot of
    `entries` fingerprints: the service's environment for them."""
    policy = h.work / "opt-in-policy.toml"
    policy.write_text((Path(__file__).resolve().parents[2] / OPT_IN_POLICY).read_text())
    topic = h.topic("consents", 1, {"cleanup.policy": "compact"})
    codec = Codec()
    granted = [
        (user.encode(), codec.encode(CONSENT, {"user_id": user, "granted": True, "at": 1, "source": "bench"}))
        for user in sorted(h.users)
    ]
    h.produce(topic, granted)
    consents = ConsentSet(CAPACITY)
    pseudonym = Pseudonymiser(h.key.hex().encode()).pseudonym
    for user in h.users:
        consents.add(pseudonym(user.encode()))
    for done in range(len(h.users), entries, 1_000_000):
        n = min(1_000_000, entries - done)
        consents.bulk_insert(random_words(n), random_words(n))
    snapshot = h.work / "consents.snapshot"
    key_check = Pseudonymiser(h.key.hex().encode()).key_check()
    history = ConsentHistory(WITHDRAWALS_CAPACITY)
    header = consent_snapshot.header(consents, history, {(topic, 0): len(granted)}, {topic: None}, key_check)
    write_snapshot(snapshot, header, consent_snapshot.body(consents, history))
    return {
        "TF_POLICY_FILE": str(policy),
        "TF_CONSENT_TOPIC": topic,
        "TF_CONSENT_CAPACITY": str(CAPACITY),
        "TF_CONSENT_SNAPSHOT_PATH": str(snapshot),
    }


def line(x: dict[str, Any]) -> str:
    a, b = x["opt_out"], x["opt_in"]

    def fig(v: dict[str, Any], key: str, fmt: str) -> str:
        low, high = (
            v["spread"][key] if key in v["spread"] else (min(r[key] for r in v["runs"]), max(r[key] for r in v["runs"]))
        )
        return f"{format(v[key], fmt)} ({format(low, fmt)}-{format(high, fmt)})"

    return (
        f"opt-in consent model in the service ({x['repetitions']} alternating pairs; {x['consent_entries']:,} consents "
        f"in a set of capacity {x['consent_capacity']:,}; every input user consented): CPU µs/record opt-out "
        f"{fig(a, 'cpu_us_per_record', '.2f')}, opt-in {fig(b, 'cpu_us_per_record', '.2f')}, paired ratio "
        f"{x['cpu_ratio_paired']:.3f} ({x['cpu_ratio_paired_min_max'][0]:.3f}-{x['cpu_ratio_paired_min_max'][1]:.3f}); "
        f"records/s {fig(a, 'records_per_second', ',.0f')} against {fig(b, 'records_per_second', ',.0f')}; "
        f"peak RSS {fig(a, 'peak_rss_mib', '.0f')} MiB against {fig(b, 'peak_rss_mib', '.0f')} MiB"
    )
