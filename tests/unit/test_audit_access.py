"""The service's access to the audit topic (issue 23, "Access"): the in-process service with receipts
on touches the audit topic only as `required_acls` allows, append-only, and reads the chain's heads
under the group `audit_group(group, "chain")` (consumer/operations/acls.py), which its group prefix
covers and which never commits. The manifests are checked against the same lists in tests/deploy."""

from __future__ import annotations

from typing import Any

from consumer.audit.receipts import RECEIPT, parse_key
from consumer.operations.acls import audit_acls, audit_group, audit_group_prefix, required_acls
from tests.fakes import Group
from tests.service_fixture import AUDIT_KEY, CODEC, InProcessService, feed, settings
from tests.unit.test_service_changes import with_optouts

APPEND_ONLY = {"WRITE", "DESCRIBE", "READ"}


def covered(kafka: Any) -> int:
    """Input records covered by the receipts on the audit topic (which holds the record of recipients too)."""
    audit = [m for m in kafka.records("audit") if parse_key(m.key()) is not None]
    return sum(CODEC.decode_own(m.value(), RECEIPT)["records"] for m in audit)


def test_the_chain_heads_are_read_under_the_audit_chain_group_which_never_commits():
    kafka, records = with_optouts(200)
    s = settings(TF_AUDIT_KEY=AUDIT_KEY)
    with InProcessService(kafka, s) as svc:
        svc.wait_subscribed()
        feed(kafka, records)
        svc.wait(lambda: covered(kafka) >= len(records), what="every record receipted")
        readers = [c for c in svc.clients.made if "audit" in getattr(c, "group_id", "")]
        assert [c.group_id for c in readers] == [audit_group(s.group_id, "chain")]
    chain = kafka.groups.get(audit_group(s.group_id, "chain"), Group())
    assert chain.committed == {} and chain.members == [], "assigned only: it never joins or commits"
    (prefix,) = [a.name for a in required_acls(s.group_id) if a.resource_type == "GROUP" and a.pattern == "PREFIXED"]
    assert audit_group(s.group_id, "chain").startswith(prefix)


def test_the_service_may_append_to_and_read_the_audit_topic_and_nothing_more():
    on_audit = {a.operation for a in required_acls() if a.resource_type == "TOPIC" and a.name.endswith(".audit.v1")}
    assert on_audit == APPEND_ONLY


def test_the_auditors_write_only_the_audit_topic_and_read_only_under_their_own_groups():
    acls = audit_acls("tf", consent_topic="consents")
    writes = {(a.resource_type, a.name) for a in acls if a.operation == "WRITE"}
    assert writes == {("TOPIC", "training-filter.audit.v1")}
    groups = {(a.name, a.pattern, a.operation) for a in acls if a.resource_type == "GROUP"}
    # Read under its own prefix; Describe only on the emitter's group (the verifier fetches its offsets).
    assert groups == {("tf-audit-", "PREFIXED", "READ"), ("tf-revocations", "LITERAL", "DESCRIBE")}
    assert audit_group_prefix("tf") == "tf-audit-"
    for command in ("verify", "report"):
        assert audit_group("tf", command) == f"tf-audit-{command}"
    assert not [a for a in acls if a.resource_type == "TRANSACTIONAL_ID"]
    assert ("TOPIC", "consents", "READ") in {(a.resource_type, a.name, a.operation) for a in acls}
    assert "consents" not in {a.name for a in audit_acls("tf")}


def test_the_report_reads_under_an_audit_group_the_auditors_user_may_use():
    """`training-filter report` runs as the KafkaUser training-filter-audit, whose only group ACL is the
    `-audit-` prefix: its reader must be named under it (a group outside draws authorisation errors)."""
    from consumer.audit.report_read import TopicReader
    from tests.fakes import FakeKafka

    s = settings(TF_AUDIT_KEY=AUDIT_KEY)
    clients = FakeKafka().clients()
    TopicReader(clients, s).close()
    (reader,) = clients.made
    (prefix,) = [a.name for a in audit_acls(s.group_id) if a.resource_type == "GROUP" and a.operation == "READ"]
    assert reader.group_id.startswith(audit_group(s.group_id, "report")) and reader.group_id.startswith(prefix)
