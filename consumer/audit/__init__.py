"""Accountability (issue 23, docs/audit.md): decision receipts (receipts.py, writer.py), and who
received the training data and whether each recipient applied the revocations (recipients.py, GDPR
Art. 19, docs/recipients.md)."""
