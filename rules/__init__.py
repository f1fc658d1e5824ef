"""The eligibility policy of training-filter: pure functions, no Kafka, no I/O.

Given decoded fields and an opt-out membership test, `Decider` returns a decision reason;
`PairDecider` returns the reasons of two policies at once (the active one and a shadow candidate). The shell
(`consumer/`) does all decoding and I/O; `training-filter check` and the streaming hot loop both call
this package, so a privacy reviewer debugging the policy sees exactly what the service does.
"""

from rules.changes import CONTENT_RETRACTIONS, PERMANENT, AccountFacts, Retraction, account_retraction, recheck
from rules.decision import (
    DEFAULT_CLOCK_SKEW_MS,
    REASONS,
    Decider,
    Reason,
    Source,
)
from rules.pair import PairDecider
from rules.policy import Policy, PolicyError, default_policy_path, load_policy, parse_policy

__all__ = [
    "CONTENT_RETRACTIONS",
    "DEFAULT_CLOCK_SKEW_MS",
    "PERMANENT",
    "REASONS",
    "AccountFacts",
    "Decider",
    "PairDecider",
    "Policy",
    "PolicyError",
    "Reason",
    "Retraction",
    "Source",
    "account_retraction",
    "default_policy_path",
    "load_policy",
    "parse_policy",
    "recheck",
]
