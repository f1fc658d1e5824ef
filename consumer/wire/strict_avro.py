"""A strict check of an Avro binary body against its writer schema, run before fastavro decodes it.

fastavro is the reference decoder, but it is lenient where the Avro specification is not: it reads
an enum or union index as a Python list index, so a negative index (the zig-zag byte 0x09 is -5)
picks a symbol counted from the end. For a Post, 0x09 as the visibility decodes as PUBLIC. It also
takes any non-zero byte as `true`. The fast path refuses all of these; this module holds the
reference path to the same bar, so that no byte string the specification forbids is ever decided.

`validator(schema)` compiles a parsed schema once into nested closures; `check(buf, pos)` walks the
body and returns the position after it, or raises `StrictAvroError` naming the rule that failed
(a fixed text: never a value). Only encodings are checked here; what the values mean (dates in
range, record shapes) is left to fastavro and the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[bytes, int], int]

_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


class StrictAvroError(ValueError):
    """The bytes break an Avro encoding rule. The message is fixed text, safe to log."""


def _varint(buf: bytes, pos: int, max_bytes: int) -> tuple[int, int]:
    raw = 0
    shift = 0
    for i in range(max_bytes):
        try:
            byte = buf[pos + i]
        except IndexError:
            raise StrictAvroError("truncated varint") from None
        if i == 9 and byte > 1:
            raise StrictAvroError("varint outside the long range")
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (raw >> 1) ^ -(raw & 1), pos + i + 1
        shift += 7
    raise StrictAvroError("varint longer than its type allows")


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    return _varint(buf, pos, 10)


def _int(buf: bytes, pos: int) -> tuple[int, int]:
    value, pos = _varint(buf, pos, 5)
    if not _INT_MIN <= value <= _INT_MAX:
        raise StrictAvroError("int outside the 32-bit range")
    return value, pos


def _length(buf: bytes, pos: int) -> tuple[int, int]:
    size, pos = _long(buf, pos)
    if size < 0:
        raise StrictAvroError("negative length")
    if size > len(buf) - pos:
        raise StrictAvroError("length beyond the end of the value")
    return size, pos


def _null(buf: bytes, pos: int) -> int:
    return pos


def _boolean(buf: bytes, pos: int) -> int:
    if pos >= len(buf):
        raise StrictAvroError("truncated boolean")
    if buf[pos] > 1:
        raise StrictAvroError("boolean byte other than 0 or 1")
    return pos + 1


def _int_check(buf: bytes, pos: int) -> int:
    return _int(buf, pos)[1]


def _long_check(buf: bytes, pos: int) -> int:
    return _long(buf, pos)[1]


def _fixed_size(size: int) -> Check:
    def check(buf: bytes, pos: int) -> int:
        if size > len(buf) - pos:
            raise StrictAvroError("truncated fixed-size value")
        return pos + size

    return check


def _bytes(buf: bytes, pos: int) -> int:
    size, pos = _length(buf, pos)
    return pos + size


def _string(buf: bytes, pos: int) -> int:
    size, pos = _length(buf, pos)
    end = pos + size
    try:
        buf[pos:end].decode("utf-8")
    except UnicodeDecodeError:
        raise StrictAvroError("string is not valid UTF-8") from None
    return end


def _enum(count: int) -> Check:
    def check(buf: bytes, pos: int) -> int:
        index, pos = _int(buf, pos)
        if not 0 <= index < count:
            raise StrictAvroError("enum index outside the symbols")
        return pos

    return check


def _union(branches: list[Check]) -> Check:
    count = len(branches)

    def check(buf: bytes, pos: int) -> int:
        index, pos = _long(buf, pos)
        if not 0 <= index < count:
            raise StrictAvroError("union index outside the branches")
        return branches[index](buf, pos)

    return check


def _blocks(item: Check, keyed: bool) -> Check:
    """Arrays and maps: blocks of `count` items; a negative count is followed by the block's size."""

    def check(buf: bytes, pos: int) -> int:
        while True:
            count, pos = _long(buf, pos)
            if count == 0:
                return pos
            declared = -1
            if count < 0:
                count = -count
                declared, pos = _long(buf, pos)
                if declared < 0:
                    raise StrictAvroError("negative block size")
            start = pos
            for _ in range(count):
                if keyed:
                    pos = _string(buf, pos)
                pos = item(buf, pos)
            if declared >= 0 and pos - start != declared:
                raise StrictAvroError("block size does not match its items")

    return check


def _record(fields: list[Check]) -> Check:
    def check(buf: bytes, pos: int) -> int:
        for field in fields:
            pos = field(buf, pos)
        return pos

    return check


_PRIMITIVES: dict[str, Check] = {
    "null": _null,
    "boolean": _boolean,
    "int": _int_check,
    "long": _long_check,
    "float": _fixed_size(4),
    "double": _fixed_size(8),
    "bytes": _bytes,
    "string": _string,
}


def validator(schema: Any) -> Check:
    """Compile a schema (as fastavro parses it, or plain JSON) into a check of its binary encoding."""
    named: dict[str, Check] = {}

    def build(node: Any, namespace: str) -> Check:
        if isinstance(node, list):
            return _union([build(branch, namespace) for branch in node])
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return _PRIMITIVES[node]
            full = node if "." in node or not namespace else f"{namespace}.{node}"
            for name in (node, full):
                if name in named:
                    return _deferred(named, name)
            raise StrictAvroError(f"unknown named type {node!r} in the writer schema")
        kind = node["type"]
        if kind in _PRIMITIVES or isinstance(kind, (list, dict)):
            return build(kind, namespace)  # {"type": "long", "logicalType": ...}: the encoding is the type's
        if kind in ("record", "error", "enum", "fixed"):
            name = node["name"]
            space = node.get("namespace", namespace) if "." not in name else name.rsplit(".", 1)[0]
            full = name if "." in name else (f"{space}.{name}" if space else name)
            if kind == "enum":
                check = _enum(len(node["symbols"]))
            elif kind == "fixed":
                check = _fixed_size(int(node["size"]))
            else:
                named[full] = named[name] = _placeholder()  # a record may refer to itself
                fields = [build(f["type"], space) for f in node["fields"]]
                check = _record(fields)
            named[full] = named[name] = check
            return check
        if kind == "array":
            return _blocks(build(node["items"], namespace), keyed=False)
        if kind == "map":
            return _blocks(build(node["values"], namespace), keyed=True)
        if isinstance(kind, str) and kind in named:
            return _deferred(named, kind)
        raise StrictAvroError(f"unsupported type {kind!r} in the writer schema")

    # fastavro's parsed schemas carry their named types under "__named_schemas"; plain JSON defines
    # them inline where first used, which `build` handles as it goes.
    return build(schema, "")


def _placeholder() -> Check:
    def check(buf: bytes, pos: int) -> int:  # pragma: no cover - replaced before any use
        raise StrictAvroError("recursive type used before its definition")

    return check


def _deferred(named: dict[str, Check], name: str) -> Check:
    """A reference to a named type, looked up when used: recursive records are defined after use."""

    def check(buf: bytes, pos: int) -> int:
        return named[name](buf, pos)

    return check
