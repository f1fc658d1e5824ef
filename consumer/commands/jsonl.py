"""JSON Lines <-> Avro records, for the operator commands (`check`, `produce`, `tail`).

Input objects use the Avro field names; dates are `YYYY-MM-DD`; timestamps are ISO-8601 with an
offset or integer epoch milliseconds. Values are converted to the raw Avro types (int days, int
milliseconds) and checked against the schema, so `check` and the service see identical fields.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any

import orjson
from fastavro.validation import validate

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_INT32 = (-(1 << 31), (1 << 31) - 1)


class JsonRecordError(ValueError):
    """A JSON Lines input line is not a valid record. The message names the field, never its value."""


def parse_line(line: str | bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise JsonRecordError(f"not JSON: {exc.msg}") from exc


def to_avro(obj: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """Convert a JSON object to an Avro record of the (parsed) record `schema`, or JsonRecordError.

    Fields missing from the object take the schema default when there is one; unknown keys are
    ignored, as an Avro reader ignores fields it does not know.
    """
    if not isinstance(obj, dict):
        raise JsonRecordError("a line must hold a JSON object")
    out: dict[str, Any] = {}
    for field in schema["fields"]:
        name = field["name"]
        if name in obj:
            out[name] = _convert(obj[name], field["type"], name)
        elif "default" in field:
            out[name] = field["default"]
        else:
            raise JsonRecordError(f"missing required field '{name}'")
    if not validate(out, schema, raise_errors=False):
        raise JsonRecordError("record does not match the Avro schema")
    return out


def _convert(value: Any, kind: Any, name: str) -> Any:
    if isinstance(kind, list):  # a union: null or one other branch in our schemas
        if value is None:
            if "null" in kind:
                return None
            raise JsonRecordError(f"field '{name}' must not be null")
        branches = [b for b in kind if b != "null"]
        errors = []
        for branch in branches:
            try:
                return _convert(value, branch, name)
            except JsonRecordError as exc:
                errors.append(exc)
        raise errors[0] if errors else JsonRecordError(f"field '{name}' has no usable type")
    if isinstance(kind, dict):
        logical = kind.get("logicalType")
        base = kind.get("type")
        if logical == "date":
            return _date_days(value, name)
        if logical == "timestamp-millis":
            return _epoch_ms(value, name)
        if base == "enum":
            if isinstance(value, str) and value in kind["symbols"]:
                return value
            raise JsonRecordError(f"field '{name}' must be one of {', '.join(kind['symbols'])}")
        if base == "record":
            return to_avro(value, kind)
        return _convert(value, base, name)
    if kind == "string":
        if isinstance(value, str):
            return value
        raise JsonRecordError(f"field '{name}' must be a string")
    if kind in ("int", "long"):
        low, high = _INT32 if kind == "int" else _INT64
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        raise JsonRecordError(f"field '{name}' must be an {kind}")
    if kind == "null":
        if value is None:
            return None
        raise JsonRecordError(f"field '{name}' must be null")
    raise JsonRecordError(f"field '{name}' has an unsupported type")


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
        if _INT64[0] <= value <= _INT64[1]:
            return value
        raise JsonRecordError(f"field '{name}' is out of range")
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise JsonRecordError(f"field '{name}' must be ISO-8601 with an offset, or epoch ms") from exc
        if when.tzinfo is None:
            raise JsonRecordError(f"field '{name}' must carry a UTC offset (e.g. Z or +02:00)")
        delta = when - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    raise JsonRecordError(f"field '{name}' must be ISO-8601 with an offset, or epoch ms")


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(obj: Any) -> bytes:
    """One JSON line (without the newline). Dates and datetimes become ISO-8601; bytes base64."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)
