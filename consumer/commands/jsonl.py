"""JSON Lines <-> Avro records, for the operator commands (`check`, `produce`, `tail`).

Input objects use the Avro field names, and each Avro type has one JSON form, the one `tail`
prints (so that `tail`'s values can be given back to `produce`):

    null                      null
    boolean                   true or false (not 0 or 1, not "true")
    int, long                 an integer in the type's range
    float, double             a number (an integer too); a float must fit 32 bits
    bytes, fixed              base64 (a fixed one of exactly its size)
    string                    a string
    enum                      one of its symbols
    [null, T] and other unions  a value of one of the branches, tried in order
    record                    an object
    date                      "YYYY-MM-DD"
    timestamp-millis          ISO-8601 with an offset ("2026-12-01T09:00:00Z", "...+02:00"), or an
                              integer of epoch milliseconds; years 1 to 9999 (UTC) only, as the
                              service decodes them (fractions of a millisecond are dropped)

Values are converted to the raw Avro types (int days, int milliseconds) and checked against the
schema, so `check` and the service see identical fields. Arrays, maps and other logical types
appear in none of the schemas these commands write and are refused with a clear error. Every error
names the field (a dotted path inside a nested record), never its value.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import re
from collections.abc import Callable
from typing import Any

import orjson
from fastavro.validation import validate

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_INT32 = (-(1 << 31), (1 << 31) - 1)
_FLOAT32_MAX = 3.4028234663852886e38
# What the service (fastavro) turns into datetime objects: years 1 to 9999. Outside, a record is
# undecodable there (a dead letter), so it must not be decided here or written by `produce`.
_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class JsonRecordError(ValueError):
    """A JSON Lines input line is not a valid record. The message names the field, never its value."""


def parse_line(line: str | bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise JsonRecordError(f"not JSON: {exc.msg}") from exc


def to_avro(obj: Any, schema: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Convert a JSON object to an Avro record of the (parsed) record `schema`, or JsonRecordError.

    Fields missing from the object take the schema default when there is one; unknown keys are
    ignored, as an Avro reader ignores fields it does not know. `path` is the field holding a
    nested record.
    """
    if not isinstance(obj, dict):
        raise JsonRecordError(f"field '{path}' must be an object" if path else "a line must hold a JSON object")
    out: dict[str, Any] = {}
    for field in schema["fields"]:
        name = field["name"]
        where = f"{path}.{name}" if path else name
        if name in obj:
            out[name] = _convert(obj[name], field["type"], where)
        elif "default" in field:
            out[name] = field["default"]
        else:
            raise JsonRecordError(f"missing required field '{where}'")
    if not path and not validate(out, schema, raise_errors=False):
        raise JsonRecordError("record does not match the Avro schema")
    return out


def _convert(value: Any, kind: Any, name: str) -> Any:
    if isinstance(kind, list):
        return _union(value, kind, name)
    if isinstance(kind, dict):
        logical = kind.get("logicalType")
        if logical is not None:
            convert = _LOGICAL.get(logical)
            if convert is None:
                raise JsonRecordError(
                    f"field '{name}' has the logical type {logical}, which JSON Lines does not support"
                )
            return convert(value, name)
        base = kind["type"]
        if base == "enum":
            if isinstance(value, str) and value in kind["symbols"]:
                return value
            raise JsonRecordError(f"field '{name}' must be one of {', '.join(kind['symbols'])}")
        if base == "record":
            return to_avro(value, kind, name)
        if base == "array":
            if not isinstance(value, list):
                raise JsonRecordError(f"field '{name}' must be a list")
            return [_convert(item, kind["items"], f"{name}[{i}]") for i, item in enumerate(value)]
        if base == "fixed":
            data = _bytes(value, name)
            if len(data) != kind["size"]:
                raise JsonRecordError(f"field '{name}' must hold exactly {kind['size']} bytes")
            return data
        return _convert(value, base, name)
    convert = _PRIMITIVES.get(kind) if isinstance(kind, str) else None
    if convert is None:
        raise JsonRecordError(f"field '{name}' has an unsupported type")
    return convert(value, name)


def _union(value: Any, branches: list[Any], name: str) -> Any:
    if value is None:
        if "null" in branches:
            return None
        raise JsonRecordError(f"field '{name}' must not be null")
    errors = []
    for branch in branches:
        if branch == "null":
            continue
        try:
            return _convert(value, branch, name)
        except JsonRecordError as exc:
            errors.append(exc)
    raise errors[0] if errors else JsonRecordError(f"field '{name}' must be null")


def _null(value: Any, name: str) -> None:
    if value is not None:
        raise JsonRecordError(f"field '{name}' must be null")


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise JsonRecordError(f"field '{name}' must be true or false")


def _integer(kind: str, bounds: tuple[int, int]) -> Callable[[Any, str], int]:
    low, high = bounds

    def convert(value: Any, name: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        raise JsonRecordError(f"field '{name}' must be an {kind}")

    return convert


def _number(kind: str, limit: float) -> Callable[[Any, str], float]:
    def convert(value: Any, name: str) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
            if abs(number) <= limit:
                return number
        raise JsonRecordError(f"field '{name}' must be a number that fits a {kind}")

    return convert


def _bytes(value: Any, name: str) -> bytes:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            pass
    raise JsonRecordError(f"field '{name}' must be base64")


def _string(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    raise JsonRecordError(f"field '{name}' must be a string")


def _date_days(value: Any, name: str) -> int:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise JsonRecordError(f"field '{name}' must be a date YYYY-MM-DD")
    try:
        day = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise JsonRecordError(f"field '{name}' is not a calendar date") from exc
    return (day - dt.date(1970, 1, 1)).days


def epoch_ms(value: Any, name: str) -> int:
    """A timestamp given as ISO-8601 with an offset, or as integer epoch milliseconds (in text too)."""
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    return _epoch_ms(value, name)


def _epoch_ms(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        millis = value
    elif isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise JsonRecordError(f"field '{name}' must be ISO-8601 with an offset, or epoch ms") from exc
        if when.tzinfo is None:
            raise JsonRecordError(f"field '{name}' must carry a UTC offset (e.g. Z or +02:00)")
        delta = when - _EPOCH
        millis = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    else:
        raise JsonRecordError(f"field '{name}' must be ISO-8601 with an offset, or epoch ms")
    if not _MIN_MS <= millis <= _MAX_MS:
        raise JsonRecordError(f"field '{name}' is outside years 1 to 9999")
    return millis


_PRIMITIVES: dict[str, Callable[[Any, str], Any]] = {
    "null": _null,
    "boolean": _boolean,
    "int": _integer("int", _INT32),
    "long": _integer("long", _INT64),
    "float": _number("float", _FLOAT32_MAX),
    "double": _number("double", float("inf")),
    "bytes": _bytes,
    "string": _string,
}
_LOGICAL: dict[str, Callable[[Any, str], Any]] = {"date": _date_days, "timestamp-millis": _epoch_ms}


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):  # fastavro's decimal logical type, from other writers' schemas
        return str(value)  # exact, unlike a JSON number
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(obj: Any) -> bytes:
    """One JSON line (without the newline): the forms of the module docstring. Dates and datetimes
    become ISO-8601, bytes base64, decimals strings; orjson prints the rest (UUIDs and times too)."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)
