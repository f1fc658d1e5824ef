"""Avro bodies written token by token, for the differential tests of the fast path.

A record of a flat schema (strings, enums, ints, longs and [null, T] unions: the v1 input schemas)
is split into tokens, one per varint and one per string's bytes, so that a test can re-encode any
single one: a varint over-long, non-minimal, beyond its type or out of its field's range; a length
negative or past the end; a union or enum index out of range; a string's bytes not UTF-8; and cut
the value at every byte. `corners` yields every such variant of a record, each with a label saying
which field and which corner (for the assertion message).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MIN_DAY, MAX_DAY = -719_162, 2_932_896  # 0001-01-01 and 9999-12-31: what datetime.date holds
MIN_MS, MAX_MS = -62_135_596_800_000, 253_402_300_799_999


@dataclass(frozen=True)
class Token:
    field: str
    role: str  # "length", "union", "enum", "int", "long" (a varint) or "utf8" (a string's bytes)
    value: Any  # the varint's signed value, or the string's bytes
    count: int = 0  # symbols of an enum, branches of a union


def zigzag(value: int) -> int:
    """The unsigned varint payload of a signed value; beyond the long range it simply grows."""
    return 2 * value if value >= 0 else -2 * value - 1


def varint(raw: int, extra: int = 0) -> bytes:
    """`raw` (unsigned) in 7-bit groups, low first; `extra` more bytes of zero groups (non-minimal)."""
    groups = []
    while True:
        groups.append(raw & 0x7F)
        raw >>= 7
        if not raw:
            break
    groups += [0] * extra
    return bytes([g | 0x80 for g in groups[:-1]] + [groups[-1]])


def tokens(schema: dict[str, Any], record: dict[str, Any]) -> list[Token]:
    """The tokens of `record` (raw Avro values: int days, int milliseconds) under a flat record schema."""
    out: list[Token] = []
    for field in schema["fields"]:
        out += _value_tokens(field["name"], field["type"], record[field["name"]])
    return out


def _value_tokens(name: str, kind: Any, value: Any) -> list[Token]:
    if isinstance(kind, list):
        index = next(i for i, b in enumerate(kind) if (b == "null") == (value is None))
        return [Token(name, "union", index, len(kind)), *_value_tokens(name, kind[index], value)]
    if isinstance(kind, dict):
        if kind["type"] == "enum":
            return [Token(name, "enum", kind["symbols"].index(value), len(kind["symbols"]))]
        return _value_tokens(name, kind["type"], value)
    if kind == "null":
        return []
    if kind == "string":
        data = value.encode("utf-8")
        return [Token(name, "length", len(data)), Token(name, "utf8", data)]
    if kind in ("int", "long"):
        return [Token(name, kind, value)]
    raise AssertionError(f"field {name}: type {kind!r} is not covered by tests/avro_corners.py; add it")


def assemble(header: bytes, parts: list[Token], replaced: dict[int, bytes] | None = None) -> bytes:
    """The framed value; `replaced` gives the raw bytes of some tokens instead of their encoding."""
    replaced = replaced or {}
    out = bytearray(header)
    for i, token in enumerate(parts):
        if i in replaced:
            out += replaced[i]
        elif token.role == "utf8":
            out += token.value
        else:
            out += varint(zigzag(token.value))
    return bytes(out)


# Raw varints at the edges of the long: 11 bytes, a 10th byte above 1 (beyond 64 bits), the two
# 10-byte extremes, and a continuation bit running into the next field (or off the end).
_BROKEN_VARINTS = [
    b"\x80" * 10 + b"\x00",
    b"\xff" * 10 + b"\x01",
    b"\xff" * 9 + b"\x02",
    b"\xff" * 9 + b"\x7f",
    b"\x80" * 9 + b"\x01",  # 10 bytes and minimal: the long 2**62 (valid, beyond every field's range)
    b"\xff" * 9 + b"\x01",  # 10 bytes and minimal: the long -2**63
    b"\x80",
    b"\xff" * 20,
]
_INVALID_UTF8 = [b"\xff", b"\x80", b"\xc0\xaf", b"\xc2", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8"]


def _replacements(token: Token, left: int) -> list[int]:
    """Other values for a varint token; `left` is how many bytes follow the token."""
    big = [2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64]
    if token.role == "length":
        return [token.value - 1, token.value + 1, left, left + 1, -1, -2, *big]
    if token.role in ("union", "enum"):
        return [*range(-token.count - 1, token.count + 2), *big]
    if token.role == "int":
        return [MIN_DAY - 1, MIN_DAY, 0, -1, MAX_DAY, MAX_DAY + 1, *big]
    return [MIN_MS - 1, MIN_MS, 0, -1, MAX_MS, MAX_MS + 1, *big]


def corners(header: bytes, schema: dict[str, Any], record: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    """(label, framed value) for every corner of every field of `record`, and every truncation."""
    parts = tokens(schema, record)
    whole = assemble(header, parts)
    yield "as written", whole
    for i, token in enumerate(parts):
        label = f"{token.field} {token.role}"
        if token.role == "utf8":
            for bad in _INVALID_UTF8:
                yield (
                    f"{label}: last byte now {bad!r}, length unchanged",
                    assemble(header, parts, {i: token.value[:-1] + bad}),
                )
                yield (
                    f"{label}: {bad!r} appended, length adjusted",
                    assemble(header, parts, {i - 1: varint(zigzag(len(token.value) + len(bad))), i: token.value + bad}),
                )
            continue
        minimal = len(varint(zigzag(token.value)))
        for extra in range(1, 12 - minimal):  # up to 11 bytes: non-minimal, then over-long for the type
            yield f"{label}: {minimal + extra} bytes", assemble(header, parts, {i: varint(zigzag(token.value), extra)})
        left = len(assemble(b"", parts[i + 1 :]))
        for value in _replacements(token, left):
            for extra in (0, 1):
                data = varint(zigzag(value), extra)
                yield f"{label} = {value} in {len(data)} bytes", assemble(header, parts, {i: data})
        for data in _BROKEN_VARINTS:
            yield f"{label}: raw {data.hex()}", assemble(header, parts, {i: data})
    for end in range(len(header), len(whole)):
        yield f"cut after byte {end}", whole[:end]
    yield "a trailing byte", whole + b"\x00"
