# cython: boundscheck=False
"""The consent set: an exact-enough set of pseudonyms that supports removal (a withdrawal deletes).

A Bloom filter fails closed for opt-outs (a false positive drops a record), but for consents a false
positive would admit a user who never consented, and a Bloom filter cannot forget a withdrawal. So
the consent set is a hash table of fixed-width fingerprints with linear probing, in one flat array
of 64-bit words (8 bytes a slot, no Python object per entry):

- the table has 2**k slots, the next power of two at or above capacity / 0.8 (load 0.4 to 0.8 at
  capacity); a pseudonym (64 hex digits of HMAC-SHA256) gives its home slot from its first 64 bits
  (the top k of them) and a 48-bit remainder from the next 48 bits;
- a slot holds `remainder << 16 | displacement + 1` (0 is an empty slot), so a look-up matches only
  an entry with the same remainder *and* the same home: a fingerprint of k + 48 bits;
- removal is backward-shift deletion (Knuth's Algorithm R): no tombstones, chains stay short.

A user who never consented is found only if some member shares all k + 48 bits of the fingerprint:
at most n / 2**(k + 48) per look-up (`false_admission_probability`): 2.1e-15 for 10 million consents,
2.6e-15 for 100 million. Pseudonyms are deterministic, so that is also the chance that a given
non-consenting user is ever admitted. A grant that does not fit (more than 90 % of the slots in use,
or a chain longer than 65,534 slots) is refused and counted: the user is not admitted (fail closed).

This file is plain Python; at install time Cython compiles it with the C types of
`fingerprints.pxd` (the probing loops run in C). Where no compiler is available it runs interpreted.
"""

from __future__ import annotations

import math
from array import array

COMPILED: bool = not __file__.endswith(".py")

MAX_LOAD = 0.8  # the table is sized so that `capacity` entries fill at most this fraction of it
HARD_LOAD = 0.9  # beyond this fraction of slots in use, grants are refused
REMAINDER_BITS = 48
MAX_DISPLACEMENT = 0xFFFF - 1


def slots_for(capacity: int) -> int:
    """The table size for `capacity` entries: the next power of two >= capacity / MAX_LOAD (at least 2**10)."""
    return max(1 << 10, 1 << math.ceil(math.log2(max(1, capacity) / MAX_LOAD)))


def false_admission_probability(entries: int, slots: int) -> float:
    """Upper bound on the chance that a look-up of a non-member matches: entries / 2**(k + 48)."""
    return float(entries) / float(slots) / float(1 << REMAINDER_BITS)


def _find(slots: array, mask: int, home: int, remainder: int) -> int:
    """The index of the entry (home, remainder), or -1."""
    i = home
    word = (remainder << 16) | 1
    while True:
        value = slots[i]
        if value == 0:
            return -1
        if value == word:
            return i
        i = (i + 1) & mask
        word += 1
        if (word & 0xFFFF) == 0:
            return -1


def _insert(slots: array, mask: int, home: int, remainder: int) -> int:
    """1 if added, 0 if already there, -1 if its chain is too long (refused)."""
    i = home
    word = (remainder << 16) | 1
    while True:
        value = slots[i]
        if value == 0:
            slots[i] = word
            return 1
        if value == word:
            return 0
        i = (i + 1) & mask
        word += 1
        if (word & 0xFFFF) == 0:
            return -1


def _remove(slots: array, mask: int, home: int, remainder: int) -> int:
    """1 if removed, 0 if it was not there. Entries after the hole move back where their chain allows."""
    hole = _find(slots, mask, home, remainder)
    if hole < 0:
        return 0
    j = hole
    while True:
        j = (j + 1) & mask
        value = slots[j]
        if value == 0:
            break
        distance = (j - hole) & mask
        if (value & 0xFFFF) - 1 >= distance:  # its home is at or before the hole: it may move there
            slots[hole] = value - distance
            hole = j
    slots[hole] = 0
    return 1


def _bulk_insert(slots: array, mask: int, shift: int, firsts: array, seconds: array) -> int:
    """Insert raw 64-bit hash pairs (the benchmark's bulk load); returns how many were added."""
    added = 0
    for n in range(len(firsts)):
        if _insert(slots, mask, firsts[n] >> shift, seconds[n] >> 16) == 1:
            added += 1
    return added


def _bulk_contains(slots: array, mask: int, shift: int, firsts: array, seconds: array) -> int:
    """How many of the raw 64-bit hash pairs are members (the benchmark's look-up loop without Python calls)."""
    found = 0
    for n in range(len(firsts)):
        if _find(slots, mask, firsts[n] >> shift, seconds[n] >> 16) >= 0:
            found += 1
    return found


def _zero(slots: array) -> None:
    for i in range(len(slots)):
        slots[i] = 0


def _hex(pseudonym: bytes, start: int, count: int) -> int:
    """`count` lower-case hex digits of `pseudonym` from `start`, as an integer (the caller checks the length)."""
    value = 0
    for i in range(start, start + count):
        c = pseudonym[i]
        if 48 <= c <= 57:
            value = (value << 4) | (c - 48)
        elif 97 <= c <= 102:
            value = (value << 4) | (c - 87)
        else:
            raise ValueError("a pseudonym is lower-case hex")
    return value


def _checked(pseudonym: bytes) -> bytes:
    if len(pseudonym) < 28:
        raise ValueError("a pseudonym has 64 hex digits")
    return pseudonym


class ConsentSet:
    """Pseudonyms of the users whose consent is present and not withdrawn."""

    def __init__(self, capacity: int, slots: array | None = None, entries: int = 0) -> None:
        size = slots_for(capacity)
        if slots is not None and len(slots) != size:
            raise ValueError(f"a table for capacity {capacity} has {size} slots, not {len(slots)}")
        self.capacity = capacity
        self._slots = slots if slots is not None else array("Q", [0]) * size
        self._view = self._slots  # compiled: a typed memoryview of the same array, acquired once
        self._mask = size - 1
        self._shift = 64 - (size.bit_length() - 1)
        self.entries = entries
        self.refused = 0  # grants that did not fit (fail closed: those users are not admitted)

    def emptied(self) -> ConsentSet:
        return ConsentSet(self.capacity)

    def clear(self) -> None:
        """Forget every consent, in place (the look-up the hot loop holds stays bound to this set)."""
        _zero(self._view)
        self.entries = 0

    def add(self, pseudonym: bytes) -> bool:
        """Record a consent; True when it was not there before. False (and counted in `refused`)
        when the table is full: the user is then not admitted."""
        _checked(pseudonym)
        home = _hex(pseudonym, 0, 16) >> self._shift
        remainder = _hex(pseudonym, 16, 12)
        if _find(self._view, self._mask, home, remainder) >= 0:
            return False
        if self.entries >= HARD_LOAD * len(self._slots):
            self.refused += 1
            return False
        result = _insert(self._view, self._mask, home, remainder)
        if result < 0:
            self.refused += 1
            return False
        self.entries += result
        return result == 1

    def remove(self, pseudonym: bytes) -> bool:
        """Withdraw a consent; True when there was one."""
        _checked(pseudonym)
        removed = _remove(self._view, self._mask, _hex(pseudonym, 0, 16) >> self._shift, _hex(pseudonym, 16, 12))
        self.entries -= removed
        return removed == 1

    def contains(self, pseudonym: bytes) -> bool:
        _checked(pseudonym)
        return _find(self._view, self._mask, _hex(pseudonym, 0, 16) >> self._shift, _hex(pseudonym, 16, 12)) >= 0

    def __contains__(self, pseudonym: bytes) -> bool:
        return self.contains(pseudonym)

    def bulk_insert(self, firsts: array, seconds: array) -> int:
        """Insert raw hash pairs (two arrays of 64-bit words); the benchmark's fast load."""
        added = _bulk_insert(self._view, self._mask, self._shift, firsts, seconds)
        self.entries += added
        return added

    def bulk_contains(self, firsts: array, seconds: array) -> int:
        return _bulk_contains(self._view, self._mask, self._shift, firsts, seconds)

    @property
    def slots(self) -> int:
        return len(self._slots)

    @property
    def size_bytes(self) -> int:
        return len(self._slots) * 8

    def false_admission_probability(self, entries: int | None = None) -> float:
        """Bound on a non-member being found, at `entries` (default: now)."""
        return false_admission_probability(self.entries if entries is None else entries, len(self._slots))

    def table(self) -> array:
        """The slot array itself (for snapshots: copy it before another thread reads it)."""
        return self._slots
