"""The consent side of an opt-in policy: the consent set (fingerprints.py) and the consent feed (feed.py)."""
