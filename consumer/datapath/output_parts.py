"""The pieces of a TrainingRecord that repeat from record to record, encoded once: the normalised
country of each raw spelling, and the policy version, source topic and partition of each partition."""

from __future__ import annotations

from consumer.wire import fastpath
from rules import Decider

# Raw country spellings ("de", " DE ") are few unless the input is hostile: the memo stays bounded.
_COUNTRY_MEMO_MAX = 4096


class OutputParts:
    def __init__(self, decider: Decider) -> None:
        self.decider = decider
        self.countries: dict[bytes, bytes] = {}  # raw spelling -> the encoded normalised code (read inline)
        self._provenance: dict[tuple[str, int], bytes] = {}

    def country(self, raw: bytes) -> bytes:
        encoded = self.countries.get(raw)
        if encoded is None:
            code = self.decider.allowed_country(raw)
            assert code is not None  # only asked for eligible records, which passed the region check
            encoded = fastpath.avro_string(code)
            if len(self.countries) < _COUNTRY_MEMO_MAX:
                self.countries[raw] = encoded
        return encoded

    def provenance(self, topic: str, partition: int) -> bytes:
        """The encoded policy_version, source_topic and source_partition of a partition's records."""
        encoded = self._provenance.get((topic, partition))
        if encoded is None:
            encoded = self._provenance[(topic, partition)] = (
                fastpath.avro_string(self.decider.policy.version)
                + fastpath.avro_string(topic)
                + fastpath.zigzag_varint(partition)
            )
        return encoded
