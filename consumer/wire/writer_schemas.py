"""Writer schemas from a registry, made safe to decode with: references inlined, annotations that would
change a value's Python type taken off, and the registry's negative answers remembered for a while.

A registry holds whatever its producers registered, and fastavro applies a writer schema's logical
types even when it resolves to a reader schema that has none: a `post_id` written as a string with
`"logicalType": "uuid"` decodes to a `uuid.UUID`, which the output encoder then refuses. So:

- `decoding_schema` takes `uuid` off strings: the string the writer wrote is exactly the value a
  reader of a plain string wants. Other logical types change what a value means (a local timestamp is
  not an instant, a time of day is not a date); they stay, and what they decode to is checked against
  the reader schema's types (`needs_value_check`), so such records are refused, never misread.
- `inline_references` turns a schema with references (named types registered under other subjects)
  into one self-contained schema: each referenced definition is placed where its name is first used.
- `NegativeAnswers` keeps "no such id", "refused" and "unusable" for a bounded time and a bounded
  number of ids, so a flood of random ids costs bounded memory and an id registered later is found.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# Logical types whose value is the underlying type's, read as a reader without the annotation would.
_NEUTRAL = frozenset({"uuid"})


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def inline_references(schema: Any, references: list[Any]) -> Any:
    """`schema` (JSON) with every named type it uses from `references` (JSON schemas, dependencies first)
    defined inline at its first use. Names it cannot find are left for the parser to refuse."""
    library: dict[str, Any] = {}
    for ref in references:
        _collect(ref, "", library)
    defined: set[str] = set()

    def walk(node: Any, namespace: str) -> Any:
        if isinstance(node, list):
            return [walk(n, namespace) for n in node]
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            full = _full_name(node, namespace)
            for name in (full, node):
                if name in defined:
                    return name
                if name in library:
                    defined.add(name)
                    definition = library[name]
                    return walk(definition, definition.get("namespace", name.rpartition(".")[0]))
            return node
        if not isinstance(node, dict):
            return node
        out = dict(node)
        space = namespace
        if out.get("type") in ("record", "error", "enum", "fixed") and isinstance(out.get("name"), str):
            name = out["name"]
            space = name.rpartition(".")[0] if "." in name else out.get("namespace", namespace)
            defined.add(_full_name(name, space))
        for key in ("type", "items", "values"):
            if key in out:
                out[key] = walk(out[key], space)
        if isinstance(out.get("fields"), list):
            out["fields"] = [
                {**f, "type": walk(f["type"], space)} if isinstance(f, dict) and "type" in f else f
                for f in out["fields"]
            ]
        return out

    return walk(schema, "")


def _collect(node: Any, namespace: str, library: dict[str, Any]) -> None:
    """Every named definition in `node`, by full name."""
    if isinstance(node, list):
        for n in node:
            _collect(n, namespace, library)
        return
    if not isinstance(node, dict):
        return
    space = namespace
    if node.get("type") in ("record", "error", "enum", "fixed") and isinstance(node.get("name"), str):
        name = node["name"]
        space = name.rpartition(".")[0] if "." in name else node.get("namespace", namespace)
        library.setdefault(_full_name(name, space), {**node, "name": _full_name(name, space)})
    for key in ("type", "items", "values"):
        if key in node:
            _collect(node[key], space, library)
    for f in node.get("fields") or []:
        if isinstance(f, dict):
            _collect(f.get("type"), space, library)


def decoding_schema(schema: Any) -> Any:
    """`schema` (JSON) without the annotations that only change a value's Python type (`uuid`)."""
    if isinstance(schema, list):
        return [decoding_schema(n) for n in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: decoding_schema(v) if k in ("type", "items", "values") else v for k, v in schema.items()}
    if out.get("logicalType") in _NEUTRAL and out.get("type") == "string":
        del out["logicalType"]
    if isinstance(out.get("fields"), list):
        out["fields"] = [
            {**f, "type": decoding_schema(f["type"])} if isinstance(f, dict) and "type" in f else f
            for f in out["fields"]
        ]
    return out


def field_logical_types(schema: Any) -> frozenset[tuple[str, str]] | None:
    """(field name, logical type) of a record's fields, union branches included; None for a schema that
    is not a record (it can never be read as one of the service's records)."""
    if not isinstance(schema, dict) or schema.get("type") not in ("record", "error"):
        return None
    found: set[tuple[str, str]] = set()
    for f in schema.get("fields") or []:
        if not isinstance(f, dict):
            continue
        kinds = f.get("type")
        for kind in kinds if isinstance(kinds, list) else [kinds]:
            if isinstance(kind, dict) and isinstance(kind.get("logicalType"), str):
                found.add((str(f.get("name")), kind["logicalType"]))
    return frozenset(found)


def needs_value_check(writer: Any, reader: Any) -> bool:
    """Must a record decoded with `writer` (decoding form) be checked against `reader`'s types? Yes when
    the writer annotates a field with a logical type the reader does not give that field."""
    written, expected = field_logical_types(writer), field_logical_types(reader)
    return written is None or expected is None or not written <= expected


class NegativeAnswers:
    """Schema ids the registry answered without a schema, with the error to raise, for `seconds` each and
    at most `size` ids (the oldest forgotten first). Shared by the loop and the feeds' sync thread."""

    def __init__(self, seconds: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.size = size
        self.clock = clock
        self._answers: OrderedDict[int, tuple[float, type[Exception]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, schema_id: int) -> type[Exception] | None:
        with self._lock:
            found = self._answers.get(schema_id)
            if found is None:
                return None
            if found[0] <= self.clock():
                del self._answers[schema_id]
                return None
            return found[1]

    def put(self, schema_id: int, error: type[Exception]) -> None:
        with self._lock:
            self._answers.pop(schema_id, None)
            self._answers[schema_id] = (self.clock() + self.seconds, error)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)
