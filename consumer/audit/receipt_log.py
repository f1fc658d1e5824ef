"""The audit topic's receipts as the verifier trusts them: each decoded, its HMAC checked under the audit
key, and each input partition's receipts checked as a hash chain, in the order the audit topic holds
them (consumer/audit/receipts.py: the key, the signature, the chain hash; never a copy of them).

- a receipt whose signature does not verify is `bad_signature` and is not used for anything else: what
  it says cannot be trusted (its range is then a gap, unless another receipt covers it);
- a receipt whose `previous_sha256` is not the hash of the value before it (of the same input
  partition) is `broken_chain`: a receipt was removed, inserted or edited between the two. The first
  receipt read of a partition is checked only when the audit topic was read from its log start
  (it must then have no predecessor); otherwise its predecessor was not read;
- a value that is not a receipt under a receipt's key is `unreadable`. The topic's other records
  (`verification/`, `recipients/`) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumer.audit.findings import Findings
from consumer.audit.receipts import RECEIPT, chain_hash, parse_key, signed_by
from consumer.wire.codec import Codec

Partition = tuple[str, int]


@dataclass(frozen=True)
class Receipt:
    audit_partition: int
    audit_offset: int
    record: dict[str, Any]

    @property
    def input(self) -> Partition:
        return self.record["input_topic"], self.record["input_partition"]

    @property
    def first(self) -> int:
        return int(self.record["first_offset"])

    @property
    def last(self) -> int:
        return int(self.record["last_offset"])

    @property
    def decided_at_ms(self) -> int:
        return int(self.record["decided_at"].timestamp() * 1000)

    def where(self) -> str:
        return f"receipt at audit partition {self.audit_partition} offset {self.audit_offset}"


class ReceiptLog:
    """Fed the audit topic's records in offset order per audit partition (`add`); `receipts` are the
    signed ones."""

    def __init__(self, codec: Codec, audit_key: bytes, audit_topic: str, from_start: set[int], findings: Findings):
        self.codec = codec
        self.key = audit_key
        self.topic = audit_topic
        self.from_start = from_start  # audit partitions read from their log start
        self.findings = findings
        self.receipts: list[Receipt] = []
        self._last: dict[Partition, tuple[int, int, bytes]] = {}  # input partition -> (audit partition, offset, value)
        self.read = 0

    def add(self, msg: Any) -> None:
        named = parse_key(msg.key())
        if named is None:
            return  # a verification result, a recipients snapshot
        self.read += 1
        audit, offset, value = msg.partition(), msg.offset(), msg.value()
        f = self.findings
        if value is None:
            f.add(
                "broken_chain",
                self.topic,
                audit,
                offset,
                f"a tombstone under the receipt key of {_name(named)}: "
                "a receipt was deleted (compaction must never be enabled on the audit topic)",
            )
            return
        try:
            record = self.codec.decode_own(value, RECEIPT)
        except Exception:
            f.add(
                "unreadable",
                self.topic,
                audit,
                offset,
                f"a value under the receipt key of {_name(named)} is not "
                "a DecisionReceipt: written by something else, or damaged",
            )
            self._last[named] = (audit, offset, value)
            return
        self._link(named, audit, offset, value, record)
        self._last[named] = (audit, offset, value)
        if not signed_by(self.codec, self.key, record):
            f.add(
                "bad_signature",
                self.topic,
                audit,
                offset,
                f"the receipt of {_name(named)} (input offsets "
                f"{record['first_offset']}-{record['last_offset']}) does not verify under the audit key: it was "
                "edited after it was signed, or signed with another key; what it says is not used",
            )
            return
        if (record["input_topic"], record["input_partition"]) != named:
            f.add(
                "bad_signature",
                self.topic,
                audit,
                offset,
                f"a signed receipt of {record['input_topic']} "
                f"partition {record['input_partition']} under the key of {_name(named)}: moved to another key",
            )
            return
        self.receipts.append(Receipt(audit, offset, record))

    def _link(self, named: Partition, audit: int, offset: int, value: bytes, record: dict[str, Any]) -> None:
        before = self._last.get(named)
        previous = record.get("previous_sha256")
        if before is None:
            if audit in self.from_start and previous is not None:
                self.findings.add(
                    "broken_chain",
                    self.topic,
                    audit,
                    offset,
                    f"the first receipt of {_name(named)} "
                    "the audit topic holds links to a receipt that is not there: receipts before it "
                    "were removed (or the audit topic's retention is shorter than the audit period)",
                )
            return
        if previous != chain_hash(before[2]):
            self.findings.add(
                "broken_chain",
                self.topic,
                audit,
                offset,
                f"the receipt of {_name(named)} (input "
                f"offsets {record['first_offset']}-{record['last_offset']}) does not link to the one "
                f"before it (audit offset {before[1]}): a receipt between them was removed or "
                "inserted, or one of the two was changed",
            )


def _name(tp: Partition) -> str:
    return f"{tp[0]} partition {tp[1]}"
