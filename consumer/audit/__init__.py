"""Accountability: decision receipts (receipts.py) and what reads them (docs/audit.md)."""
