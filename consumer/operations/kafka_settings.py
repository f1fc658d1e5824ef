"""The librdkafka pass-through: TF_KAFKA_<NAME> (every client), TF_CONSUMER_KAFKA_<NAME> and
TF_PRODUCER_KAFKA_<NAME>, where <NAME> is the property upper-cased, '.' as '_' and '_' as '__'.

Read here, with the checks that need no client: properties a setting owns (bootstrap.servers is
TF_BOOTSTRAP_SERVERS's) or the delivery guarantee rests on, callbacks (the service installs its
own), two variables for one property, and the numbers the service itself reads. librdkafka judges
the rest when a client is made: consumer/service/preflight.py makes each kind without
bootstrap.servers (so nothing is connected to), and `rejection` turns a refusal into lines that
name the variables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException

SCOPES = {"KAFKA_": "common", "CONSUMER_KAFKA_": "consumer", "PRODUCER_KAFKA_": "producer"}
PREFIX = "TF_"

# A setting owns these: the pass-through may not set them behind its back (aliases included).
OWNED = {
    "bootstrap.servers": "TF_BOOTSTRAP_SERVERS",
    "metadata.broker.list": "TF_BOOTSTRAP_SERVERS",
    "group.id": "TF_GROUP_ID",
    "transactional.id": "TF_TRANSACTIONAL_ID",
    "statistics.interval.ms": "TF_STATISTICS_INTERVAL_MS",
}
# The delivery guarantees rest on these; the service sets them last, over the pass-through.
ENFORCED = {
    "consumer": {"enable.auto.offset.store", "enable.auto.commit", "isolation.level"},
    "producer": {"enable.idempotence", "acks", "request.required.acks"},
}
# Python callables in confluent-kafka's configuration, not librdkafka values.
CALLBACKS = {
    "error_cb",
    "stats_cb",
    "throttle_cb",
    "oauth_cb",
    "logger",
    "on_delivery",
    "on_commit",
    "default.topic.config",
}
_CALLBACKS_WRITTEN = {name.replace(".", "_") for name in CALLBACKS}  # TF_KAFKA_ERROR_CB reads as error.cb
# Properties the service reads itself (sizes and timeouts it computes with): plain whole numbers.
NUMBERS_READ = {
    "message.max.bytes",
    "message.timeout.ms",
    "transaction.timeout.ms",
    "queue.buffering.max.kbytes",
    "queued.max.messages.kbytes",
    "max.poll.interval.ms",
}
# librdkafka names a property by its canonical name in some messages (linger.ms -> queue.buffering.max.ms).
ALIASES = {
    "linger.ms": "queue.buffering.max.ms",
    "acks": "request.required.acks",
    "delivery.timeout.ms": "message.timeout.ms",
    "retries": "message.send.max.retries",
    "compression.codec": "compression.type",
    "metadata.broker.list": "bootstrap.servers",
    "batch.num.messages": "batch.num.messages",
}
_SECRET = re.compile(r"password|secret|\.pem$|key$|token", re.IGNORECASE)


@dataclass(frozen=True)
class PassThrough:
    var: str
    scope: str  # common, consumer or producer
    prop: str
    value: str

    def shown(self) -> str:
        return "(hidden)" if _SECRET.search(self.prop) else repr(self.value)


def kafka_property(env_suffix: str) -> str:
    """TF_KAFKA_SASL_MECHANISM -> sasl.mechanism; a double underscore is a literal underscore."""
    return env_suffix.lower().replace("__", "\0").replace("_", ".").replace("\0", "_")


def read_passthrough(env: Mapping[str, str], problems: list[str]) -> list[PassThrough]:
    out: list[PassThrough] = []
    seen: dict[tuple[str, str], PassThrough] = {}
    for var, value in sorted(env.items()):
        rest = var[len(PREFIX) :] if var.startswith(PREFIX) else ""
        prefix = next((p for p in SCOPES if rest.startswith(p)), None)
        if prefix is None:
            continue
        name = rest[len(prefix) :]
        if not name:
            problems.append(f"{var} names no librdkafka property: write it as {var}<PROPERTY>, or unset it")
            continue
        source = PassThrough(var, SCOPES[prefix], kafka_property(name), value)
        problem = _not_settable(source)
        if problem:
            problems.append(problem)
            continue
        earlier = seen.get((source.scope, source.prop))
        if earlier is not None and earlier.value != source.value:
            problems.append(f"{earlier.var} and {var} both set {source.prop}, to different values: keep one of them")
            continue
        seen[(source.scope, source.prop)] = source
        out.append(source)
    return out


def _not_settable(source: PassThrough) -> str | None:
    var, prop = source.var, source.prop
    if prop in OWNED:
        return f"{var} cannot be set: {prop} comes from {OWNED[prop]}; set that instead"
    if prop in CALLBACKS or prop.replace(".", "_") in _CALLBACKS_WRITTEN:
        return f"{var} cannot be set: {prop} is a callback that the service installs itself; unset it"
    for client, props in ENFORCED.items():
        if prop in props and source.scope in ("common", client):
            return (
                f"{var} cannot be set: the delivery guarantee depends on {prop}; use TF_PROCESSING_GUARANTEE "
                "(at-least-once or exactly-once) and unset it"
            )
    if prop in NUMBERS_READ and not re.fullmatch(r"\s*[0-9]{1,12}\s*", source.value):
        return f"{var}={source.value!r} is invalid: {prop} must be a whole number (the service computes with it)"
    return None


def override_problems(sources: Iterable[PassThrough]) -> list[str]:
    """The pass-through properties that may not be set (for Settings made without load_settings)."""
    return [p for p in (_not_settable(s) for s in sources) if p]


def scope(sources: Iterable[PassThrough], name: str) -> dict[str, str]:
    return {s.prop: s.value for s in sources if s.scope == name}


def without_servers(config: Mapping[str, Any]) -> dict[str, Any]:
    """A client configuration that connects to nothing: librdkafka checks it when the client is made."""
    return {k: v for k, v in config.items() if k not in ("bootstrap.servers", "metadata.broker.list")}


class _Silent:
    """A logger for preflight clients: their lines (no bootstrap.servers is set, of course) go nowhere."""

    def log(self, *args: Any) -> None:
        return None


_SILENT = _Silent()


def silent_logger() -> Any:
    return _SILENT


def make(kind: Callable[[dict[str, Any]], Any], config: dict[str, Any]) -> str | None:
    """Make (and close) a client of `kind` from `config`; None, or librdkafka's reason for refusing it."""
    try:
        client = kind(config)
    except (KafkaException, TypeError, ValueError, AttributeError) as exc:
        return reason(exc)
    close = getattr(client, "close", None)
    if close is not None:
        close()
    return None


def reason(exc: BaseException) -> str:
    """librdkafka's reason for refusing a configuration (or confluent-kafka's, for the dict's Python values)."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    text = err.str() if err is not None and hasattr(err, "str") else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def minimal(kind: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"logger": silent_logger()}
    if kind is Consumer:
        base["group.id"] = "training-filter-preflight"
    return base


def rejection(
    kind: Any, client: str, what: str, reason: str, sources: Iterable[PassThrough], own: Mapping[str, str]
) -> list[str]:
    """Lines naming the variables behind librdkafka's `reason` for refusing the `what` (a `client`
    of `kind`): those whose property the reason names, else those whose value it quotes, else those
    it refuses alone, else the settings of the table whose property it names, else every variable
    that applies."""
    applying = [s for s in sources if s.scope in ("common", client)]
    named = [s for s in applying if _names(reason, s.prop)] or [s for s in applying if _quotes(reason, s)]
    if len(named) == 1:
        return [_refused(named[0], what, reason)]
    if named:
        variables = " and ".join(s.var for s in named)
        return [f"{variables}: librdkafka refuses them together ({what}): {reason}; correct them"]
    alone = [(s, make(kind, {**minimal(kind), s.prop: s.value})) for s in applying]
    refused = [_refused(s, what, why) for s, why in alone if why]
    if refused:
        return refused
    settings = [var for prop, var in own.items() if _names(reason, prop)]
    every = settings or [s.var for s in applying] or sorted(set(own.values()))
    return [f"{', '.join(every)}: librdkafka refuses the {what}'s configuration: {reason}; correct them"]


def _refused(source: PassThrough, what: str, reason: str) -> str:
    return f"{source.var}={source.shown()} is refused by librdkafka ({what}): {reason}; correct it or unset it"


def _names(reason: str, prop: str) -> bool:
    names = {prop, ALIASES.get(prop, prop)}
    return any(re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", reason) for name in names)


def _quotes(reason: str, source: PassThrough) -> bool:
    """Does the reason quote the variable's value (e.g. an unsupported SASL mechanism, a plugin path)?"""
    value = source.value.strip()
    if len(value) < 4 or _SECRET.search(source.prop):
        return False
    return re.search(rf"(?<![\w.]){re.escape(value)}(?![\w])", reason) is not None
