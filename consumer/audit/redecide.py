"""A receipt's range decided again: the input records it covers, under the policy it names (found by the
SHA-256 of the kept policy files' bytes), with the feeds' state at its positions and its clock
(`decided_at` + `clock_skew_ms`), by the service's own batch processor (consumer/datapath/batch.py)
built as the service builds it (consumer/service/assemble.py's Builder) and writing into `Diverted`,
which keeps every output instead of producing it. What comes out: the counts by decision and by
dead-letter cause, and each admitted record's provenance and body digest."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumer.audit.emitted import Provenance, digest
from consumer.audit.feed_state import FeedState
from consumer.audit.receipt_log import Receipt
from consumer.audit.receipts import file_sha256
from consumer.commands.decide_again import Diverted, cause_of
from consumer.datapath.offsets import PendingBatch
from consumer.datapath.output_limits import OutputLimits
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.operations.clients import Clients
from consumer.operations.metrics import Metrics
from consumer.operations.settings import Settings
from consumer.service.assemble import Builder
from consumer.wire.codec import TRAINING_RECORD, Codec
from rules import Policy, PolicyError, load_policy


class PolicyFolderError(ValueError):
    """The policy folder cannot be read (a configuration error)."""


def kept_policies(folder: Path, skipped: Callable[[Path, str], None] = lambda path, why: None) -> dict[str, Policy]:
    """The policy files of `folder` (*.toml) by the SHA-256 of their bytes. One that does not load is
    skipped, and `skipped` told the file and why: a receipt naming its hash then says `unknown_policy`."""
    try:
        paths = sorted(folder.glob("*.toml"))
    except OSError as exc:
        raise PolicyFolderError(f"{folder}: cannot read it ({exc.strerror or type(exc).__name__})") from exc
    if not folder.is_dir():
        raise PolicyFolderError(f"{folder}: not a folder of policy files")
    out: dict[str, Policy] = {}
    for path in paths:
        try:
            out[file_sha256(path.read_bytes())] = load_policy(path)
        except OSError as exc:
            skipped(path, f"cannot read it ({exc.strerror or type(exc).__name__})")
        except UnicodeDecodeError:
            skipped(path, "it is not UTF-8 text")
        except PolicyError as exc:
            skipped(path, str(exc))
    return out


@dataclass
class Decided:
    decisions: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    eligible: dict[Provenance, bytes] = field(default_factory=dict)  # provenance -> body digest


class Redecider:
    def __init__(
        self, settings: Settings, clients: Clients, codec: Codec, pseudonymiser: Pseudonymiser, limits: OutputLimits
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.codec = codec
        self.pseudonymiser = pseudonymiser
        self.limits = limits
        self.metrics = Metrics()

    def decide(self, receipt: Receipt, policy: Policy, sha: str, state: FeedState, messages: list[Any]) -> Decided:
        processor, kept = self._processor(state, policy, sha)
        decided_at = receipt.decided_at_ms
        processor.clock = lambda: (decided_at + 0.5) / 1000  # the batch's clock reading, to the millisecond
        processor.clock_skew_ms = int(receipt.record["clock_skew_ms"])
        processor.resolve_schemas(messages)
        tally: dict[Any, int] = {}
        kept.take()
        processor.process(messages, PendingBatch(), tally)
        processor.take_counts()
        out = Decided()
        for (_, reason), count in tally.items():
            out.decisions[str(reason)] += count
        s = self.settings
        for topic, value, _, headers in kept.take():
            if topic == s.training_topic and value is not None:
                r = self.codec.decode_own(value, TRAINING_RECORD)
                out.eligible[r["source_topic"], r["source_partition"], r["source_offset"]] = digest(value)
            elif topic == s.dlq_topic:
                out.dead_letters[cause_of(headers)] += 1
        return out

    def _processor(self, state: FeedState, policy: Policy, sha: str) -> tuple[Any, Diverted]:
        cached = state.processors.get(sha)
        if cached is None:
            s = dataclasses.replace(self.settings, policy=policy, shadow_policy=None)
            builder = Builder(s, self.clients, self.codec, self.pseudonymiser, self.metrics, None)
            kept = Diverted(None)
            cached = state.processors[sha] = (builder.processor(kept, self.limits, state.feeds()), kept)  # type: ignore[arg-type]
        return cached
