"""author_pseudonym: HMAC-SHA256 of the user id under the deployment's secret key."""

from __future__ import annotations

import hmac

from consumer.config import MIN_HMAC_KEY_BYTES

# Users post many times; a bounded memo saves the HMAC for repeat authors. It is cleared, not
# evicted one by one, when full: simple, and the cost of a refill is a few hundred ms of HMACs.
_MEMO_MAX = 200_000


class Pseudonymiser:
    __slots__ = ("__key", "_memo")

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_HMAC_KEY_BYTES:
            raise ValueError(f"the HMAC key must be at least {MIN_HMAC_KEY_BYTES} bytes")
        self.__key = key
        self._memo: dict[bytes, bytes] = {}

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymiser(<key hidden>)"

    def pseudonym(self, user_id: bytes) -> bytes:
        """Lower-case hex (64 ASCII bytes) of HMAC-SHA256(key, UTF-8 user id)."""
        memo = self._memo
        value = memo.get(user_id)
        if value is None:
            value = hmac.digest(self.__key, user_id, "sha256").hex().encode("ascii")
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[user_id] = value
        return value
