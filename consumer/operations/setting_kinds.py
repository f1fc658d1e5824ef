"""The kinds of value a setting takes, with their bounds as data (not hidden in parse functions), so
that parsing, validation, `--help` and the documentation all come from the one settings table.

Each kind parses the variable's text or raises ValueError with what is wrong and what to set
instead ("must be a whole number from 1 to 1,000,000"); the caller adds the variable's name.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass

_WHOLE = re.compile(r"[+-]?[0-9]+")
_MAX_DIGITS = 40  # past any bound in the table; keeps int() away from its digit limit


def _grouped(value: float) -> str:
    """1000000 -> '1,000,000'; 1e-06 -> '1e-06'; 0.5 -> '0.5'."""
    if float(value).is_integer() and abs(value) < 1e16:
        return f"{int(value):,}"
    return f"{value:g}"


@dataclass(frozen=True)
class Integer:
    low: int
    high: int
    unit: str = ""

    def parse(self, text: str) -> int:
        value = text.strip()
        if not _WHOLE.fullmatch(value) or len(value) > _MAX_DIGITS:
            raise ValueError(f"must be a whole number (digits only) {self.range()}")
        number = int(value)
        if not self.low <= number <= self.high:
            raise ValueError(f"must be {self.range()}")
        return number

    def range(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"from {_grouped(self.low)} to {_grouped(self.high)}{unit}"

    def describe(self) -> str:
        return f"whole number {self.range()}"


@dataclass(frozen=True)
class Number:
    low: float
    high: float
    unit: str = ""

    def parse(self, text: str) -> float:
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"must be a number {self.range()}") from None
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number {self.range()}")
        if not self.low <= number <= self.high:
            raise ValueError(f"must be {self.range()}")
        return number

    def range(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"from {_grouped(self.low)} to {_grouped(self.high)}{unit}"

    def describe(self) -> str:
        return f"number {self.range()}"


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    def parse(self, text: str) -> str:
        value = text.strip().lower()
        if value not in self.options:
            raise ValueError(f"must be one of {', '.join(self.options)}")
        return value

    def describe(self) -> str:
        return " | ".join(self.options)


@dataclass(frozen=True)
class Boolean:
    def parse(self, text: str) -> bool:
        value = text.strip().lower()
        if value in ("true", "1", "yes"):
            return True
        if value in ("false", "0", "no"):
            return False
        raise ValueError("must be true or false")

    def describe(self) -> str:
        return "true | false"


@dataclass(frozen=True)
class Topic:
    """A Kafka topic name. Every setting of this kind is a topic role: the roles must be distinct."""

    optional: bool = False

    def parse(self, text: str) -> str:
        value = text.strip()
        if not value and self.optional:
            return ""
        if (
            not value
            or len(value) > 249
            or value in (".", "..")
            or not all(c.isascii() and (c.isalnum() or c in "._-") for c in value)
        ):
            raise ValueError(
                "must be a Kafka topic name: 1 to 249 of ASCII letters, digits, '.', '_', '-' (not '.' or '..')"
            )
        return value

    def describe(self) -> str:
        return "topic name" + (" or empty" if self.optional else "")


@dataclass(frozen=True)
class Text:
    """Free text; `identifier`: non-empty, printable, no spaces (a group or transactional id)."""

    identifier: bool = False
    optional: bool = True
    max_length: int = 4096

    def parse(self, text: str) -> str:
        value = text.strip() if self.identifier else text
        if self.identifier and not value and self.optional:
            return ""
        if self.identifier and (not value or not value.isprintable() or any(c.isspace() for c in value)):
            raise ValueError("must be a non-empty name without spaces or control characters")
        if len(value) > self.max_length:
            raise ValueError(f"must be at most {self.max_length:,} characters")
        return value

    def describe(self) -> str:
        return "name" if self.identifier else "text"


@dataclass(frozen=True)
class ReadFile:
    """A file the service reads (empty: not used). The paths of the settings are checked against each
    other: no file the service writes may be one it reads."""

    def parse(self, text: str) -> str:
        return text.strip()

    def describe(self) -> str:
        return "path of a file read, or empty"


@dataclass(frozen=True)
class WriteFile:
    """A file the service writes (a snapshot; empty: none). Its folder must exist and be writable."""

    def parse(self, text: str) -> str:
        return text.strip()

    def describe(self) -> str:
        return "path of a file written, or empty"


@dataclass(frozen=True)
class Url:
    def parse(self, text: str) -> str:
        value = text.strip()
        if value and (not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value)):
            raise ValueError("must be an http:// or https:// URL with a host, e.g. http://registry:8081")
        return value

    def describe(self) -> str:
        return "http(s) URL or empty"


@dataclass(frozen=True)
class Version:
    def parse(self, text: str) -> str:
        value = text.strip().lower()
        if value == "latest":
            return value
        if not (value.isascii() and value.isdigit() and len(value) <= 10 and 0 < int(value) < 2**31):
            raise ValueError("must be latest or a version number (1, 2, ...)")
        return str(int(value))

    def describe(self) -> str:
        return "latest | version number"


_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?")


def _host_problem(host: str) -> str | None:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host} is not an IPv6 address"
        return None
    if not _HOST.fullmatch(host) or len(host) > 253:
        return f"{host!r} is not a host name or address"
    return None


@dataclass(frozen=True)
class Servers:
    """librdkafka's bootstrap.servers: host[:port] or SCHEME://host[:port], comma-separated."""

    def parse(self, text: str) -> str:
        value = text.strip()
        if not value:
            raise ValueError("must be host:port[,host:port...], e.g. kafka-0.kafka:9092")
        for entry in value.split(","):
            problem = _server_problem(entry.strip())
            if problem:
                raise ValueError(f"{problem}: give host:port[,host:port...], e.g. kafka-0.kafka:9092")
        return value

    def describe(self) -> str:
        return "host:port[,host:port...]"


def _server_problem(entry: str) -> str | None:
    if not entry:
        return "an entry is empty"
    address = entry.split("://", 1)[1] if "://" in entry else entry
    host, port = address, ""
    if address.startswith("["):
        host, _, rest = address.partition("]")
        host += "]"
        if rest and not rest.startswith(":"):
            return f"{entry!r} is not host:port"
        port = rest[1:]
    elif ":" in address:
        host, _, port = address.rpartition(":")
    problem = _host_problem(host)
    if problem:
        return problem
    if ":" in address.removeprefix(host) and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return f"{entry!r} has no port 1-65535"
    return None


@dataclass(frozen=True)
class Host:
    """An address to listen on: an IPv4 address or a host name (the HTTP server is IPv4)."""

    def parse(self, text: str) -> str:
        value = text.strip()
        problem = _host_problem(value) if value else "it is empty"
        if problem:
            raise ValueError(f"{problem}: give an address to listen on, e.g. 0.0.0.0 or 127.0.0.1")
        return value

    def describe(self) -> str:
        return "IPv4 address or host name"


Kind = Integer | Number | Choice | Boolean | Topic | Text | ReadFile | WriteFile | Url | Version | Servers | Host
