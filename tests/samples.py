"""Sample records of every schema, in the raw Avro types, for the tests."""

from __future__ import annotations

from typing import Any

POST: dict[str, Any] = {
    "post_id": "p-1",
    "author_id": "u-1",
    "author_birth_date": 7300,
    "author_country": "DE",
    "visibility": "PUBLIC",
    "kind": "POST",
    "surface": "facebook",
    "language": "de",
    "text": "Guten Morgen, Welt \u2615",
    "created_at": 1_767_225_600_000,
}
AI_INTERACTION: dict[str, Any] = {
    "interaction_id": "i-1",
    "user_id": "u-2",
    "user_birth_date": None,
    "user_country": "fr",
    "context": "DIRECT_WITH_AI",
    "surface": "whatsapp",
    "language": None,
    "prompt": "Quelle heure est-il ?",
    "response": "Il est midi.",
    "created_at": 1_767_225_600_123,
}
OPTOUT: dict[str, Any] = {"user_id": "u-3", "opted_out_at": 1_767_225_600_000, "source": "objection_form"}
TRAINING_RECORD: dict[str, Any] = {
    "record_id": "p-1",
    "source": "POST",
    "text": "hello",
    "prompt": None,
    "response": None,
    "language": "en",
    "country": "IE",
    "created_at": 1_767_225_600_000,
    "author_pseudonym": "ab" * 32,
    "policy_version": "v1",
    "source_topic": "posts.v1",
    "source_partition": 3,
    "source_offset": 12345678901,
}
TRAINING_RECORD_AI: dict[str, Any] = {
    **TRAINING_RECORD,
    "record_id": "i-1",
    "source": "AI_INTERACTION",
    "language": None,
    "text": None,
    "prompt": "hi",
    "response": "hello",
}
REVOCATION: dict[str, Any] = {
    "author_pseudonym": "cd" * 32,
    "opted_out_at": 1_767_225_600_000,
    "scope": "AUTHOR",
    "reason": "opted_out",
    "record_id": None,
    "created_before": None,
    "lifted": False,
}
# Revocation v2's other shapes: a record retracted, and an author's records before a re-grant.
RECORD_RETRACTION: dict[str, Any] = {
    **REVOCATION,
    "scope": "RECORD",
    "reason": "content_deleted",
    "record_id": "p-1",
}
BOUNDED_RETRACTION: dict[str, Any] = {
    **REVOCATION,
    "reason": "consent_withdrawn",
    "created_before": 1_767_312_000_000,
}
CONTENT_CHANGE: dict[str, Any] = {
    "record_id": "p-1",
    "user_id": "u-1",
    "change": "DELETED",
    "replaced_by": None,
    "at": 1_767_225_600_000,
    "source": "post_service",
}
ACCOUNT_CHANGE: dict[str, Any] = {
    "user_id": "u-1",
    "deleted": False,
    "birth_date": 11_000,
    "country": "DE",
    "at": 1_767_225_600_000,
    "source": "support_correction",
}

RECEIPT: dict[str, Any] = {
    "input_topic": "posts.v1",
    "input_partition": 3,
    "first_offset": 100,
    "last_offset": 199,
    "records": 100,
    "decisions": [
        {"name": "eligible", "records": 61},
        {"name": "malformed", "records": 1},
        {"name": "not_public", "records": 38},
    ],
    "dead_letters": [{"name": "bad_body", "records": 1}],
    "guarantee": "at-least-once",
    "batch_id": "5f0c6d1e9a7b4c2d8e3f1a2b3c4d5e6f",
    "outputs": [
        {"topic": "training.eligible.v1", "partition": 0, "first_offset": 40, "last_offset": 120, "records": 61},
        {"topic": "training-filter.dlq.v1", "partition": 0, "first_offset": 7, "last_offset": 7, "records": 1},
    ],
    "feeds": [{"feed": "optouts", "topic": "privacy.optouts.v1", "partition": 0, "next_offset": 5_012}],
    "policy_version": "2026-11-24.1",
    "policy_sha256": "0" * 64,
    "shadow_policy_version": None,
    "shadow_policy_sha256": None,
    "decided_at": 1_767_225_600_000,
    "clock_skew_ms": 300_000,
    "service_version": "0.1.0",
    "replica": "training-filter-7d9f8-abcde",
    "written_at": 1_767_225_600_050,
    "previous_sha256": None,
    "hmac_sha256": "1" * 64,
}

VERIFICATION: dict[str, Any] = {
    "started_at": 1_767_225_600_000,
    "finished_at": 1_767_225_660_000,
    "window_from": 1_767_139_200_000,
    "window_until": None,
    "receipts": 120,
    "records": 1_000_000,
    "passed": False,
    "discrepancies": [
        {
            "kind": "gap",
            "topic": "posts.v1",
            "partition": 2,
            "offset": 5_000,
            "detail": "offsets 5000-5099 have no receipt",
        }
    ],
    "discrepancy_count": 1,
    "service_version": "0.1.0",
    "hmac_sha256": "2" * 64,
}
RECIPIENTS: dict[str, Any] = {
    "taken_at": 1_767_225_600_000,
    "replica": "training-filter-7d9f8-abcde",
    "recipients": [
        {
            "group": "ml-team-reader",
            "reads_revocations": True,
            "unacknowledged": 0,
            "oldest_unacknowledged_seconds": None,
        },
        {
            "group": "analytics",
            "reads_revocations": False,
            "unacknowledged": 12,
            "oldest_unacknowledged_seconds": 3600.5,
        },
    ],
    "hmac_sha256": "3" * 64,
}

# A candidate policy for the shadow tests and the shadow benchmark: a higher minimum age (21), France
# and Germany out, Switzerland and the United Kingdom in.
CANDIDATE_POLICY = """
version = "2026-12-01.1-candidate"
regions = [
  "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "GR", "HU", "IE",
  "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
  "IS", "LI", "NO", "CH", "GB",
]
minimum_age = 21
maximum_plausible_age = 120

[sources]
post = true
ai_interaction = true
"""

# A post and an interaction in the raw Avro types (int days, int milliseconds) that the hot loop reads.
ADULT_POST = {
    "post_id": "p-1",
    "author_id": "u-1",
    "author_birth_date": 7000,
    "author_country": "DE",
    "visibility": "PUBLIC",
    "kind": "POST",
    "surface": "s",
    "language": "de",
    "text": "hallo welt",
    "created_at": 1_767_225_600_000,
}
MINOR_AI = {
    "interaction_id": "i-1",
    "user_id": "u-2",
    "user_birth_date": 14_000,
    "user_country": "FR",
    "context": "DIRECT_WITH_AI",
    "surface": "s",
    "language": None,
    "prompt": "p",
    "response": "r",
    "created_at": 1_767_225_600_000,
}
