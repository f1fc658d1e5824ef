"""The decision receipt's contract (avro/audit_receipt.v1.avsc, docs/audit.md): its key, its signature
and its place in the hash chain, shared by the service that writes receipts and the verifier that
checks them, so that the two cannot disagree on what was signed.

- **Key**: `receipt/<input topic>/<input partition>`: every receipt of an input partition lands in one
  partition of the audit topic, in the order they were written.
- **Signature**: HMAC-SHA256 under the audit key (not the pseudonymisation key: whoever may verify
  receipts must not be able to compute pseudonyms) of the receipt's Avro body encoded with
  `hmac_sha256` empty. The body, not the framed value, so that a registry's schema id does not matter.
- **Chain**: `previous_sha256` is the SHA-256 of the previous receipt's value bytes exactly as the
  audit topic holds them, so that an edited, removed or inserted receipt breaks the chain.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from consumer.wire.codec import Codec

RECEIPT = "platform.audit.v1.DecisionReceipt"
# The audit topic's other records, signed as receipts are (`sign` with the schema's name).
VERIFICATION = "platform.audit.v1.VerificationResult"
RECIPIENTS = "platform.audit.v1.RecipientsSnapshot"
KEY_PREFIX = b"receipt/"
MIN_AUDIT_KEY_BYTES = 32


def receipt_key(topic: str, partition: int) -> bytes:
    return KEY_PREFIX + f"{topic}/{partition}".encode()


def parse_key(key: bytes | None) -> tuple[str, int] | None:
    """(input topic, partition) of a receipt's key; None for a key that is not a receipt's."""
    if not key or not key.startswith(KEY_PREFIX):
        return None
    topic, _, partition = key[len(KEY_PREFIX) :].decode("utf-8", "replace").rpartition("/")
    return (topic, int(partition)) if topic and partition.isdigit() else None


def signature(codec: Codec, audit_key: bytes, record: dict[str, Any], schema: str = RECEIPT) -> str:
    body = codec.encode_body(schema, {**record, "hmac_sha256": ""})
    return hmac.new(audit_key, body, hashlib.sha256).hexdigest()


def sign(codec: Codec, audit_key: bytes, record: dict[str, Any], schema: str = RECEIPT) -> dict[str, Any]:
    """`record` with its `hmac_sha256` set."""
    return {**record, "hmac_sha256": signature(codec, audit_key, record, schema)}


def signed_by(codec: Codec, audit_key: bytes, record: dict[str, Any], schema: str = RECEIPT) -> bool:
    given = str(record.get("hmac_sha256", ""))
    return hmac.compare_digest(signature(codec, audit_key, record, schema), given)


def chain_hash(value: bytes) -> str:
    """What the next receipt of the same input partition puts in `previous_sha256`."""
    return hashlib.sha256(value).hexdigest()


def file_sha256(data: bytes) -> str:
    """A policy file's hash, as receipts name the policy they decided under."""
    return hashlib.sha256(data).hexdigest()
