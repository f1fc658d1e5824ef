"""Accountability towards the outside (issue 23): who received the training data, and whether each
recipient applied the revocations (GDPR Art. 19, docs/recipients.md)."""
