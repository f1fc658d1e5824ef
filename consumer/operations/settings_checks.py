"""Checks between settings: each setting can be valid alone and the combination still wrong.

- Topic roles (every setting of topic kind) are pairwise distinct, also as Kafka compares them
  ('.' and '_' collide in its metric names, so the broker refuses to hold both).
- Files: a file the service writes (a snapshot) is none that it reads (the key, a policy, a
  certificate) and not the other snapshot; its folder exists and is writable, and it is no folder;
  the key file is no other setting's file (a policy file as the key would be a key anyone can read).
- Timings: the shortest consume() wait is at most the longest; the stall bound exceeds the longest
  healthy turn of the loop; the recipients' scan is off (0) or at least 5 s apart.
- A TF_ variable that is no setting but one or two letters from one (a typo would silently leave
  the default in force).

Checks that need the real librdkafka configurations are in consumer/service/preflight.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from consumer.operations.kafka_settings import PassThrough
from consumer.operations.setting_kinds import ReadFile, Topic, WriteFile

PREFIX = "TF_"
# librdkafka properties that name files the service reads (certificates, keys, keytabs).
_KAFKA_FILES = (".location", "keytab")
MIN_RECIPIENTS_INTERVAL = 5  # seconds, unless 0 (no scans)
_IGNORED_PREFIXES = ("TF_TEST_", "TF_KAFKA_", "TF_CONSUMER_KAFKA_", "TF_PRODUCER_KAFKA_")


class SettingLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> Any: ...

    @property
    def var(self) -> str: ...


def between(
    values: Mapping[str, Any],
    table: Sequence[SettingLike],
    passthrough: Sequence[PassThrough],
    problems: list[str],
) -> None:
    topics_distinct(values, table, problems)
    files_apart(values, table, passthrough, problems)
    timings(values, problems)


def topics_distinct(values: Mapping[str, Any], table: Sequence[SettingLike], problems: list[str]) -> None:
    roles = [(s.var, values[s.name.lower()]) for s in table if isinstance(s.kind, Topic) and values.get(s.name.lower())]
    by_name: dict[str, list[str]] = {}
    for var, name in roles:
        by_name.setdefault(name, []).append(var)
    for name, variables in by_name.items():
        if len(variables) > 1:
            quantity = "both" if len(variables) == 2 else "all"
            problems.append(
                f"{' and '.join(variables)} are {quantity} {name!r}: each topic role needs a topic of its own (one "
                "topic in two roles mixes their records, e.g. revocations read back as opt-outs, raw user ids in "
                "the filter); "
                f"give {variables[-1]} its own topic"
            )
    by_metric: dict[str, list[tuple[str, str]]] = {}
    for name, variables in by_name.items():
        by_metric.setdefault(name.replace(".", "_"), []).append((variables[0], name))
    for group in by_metric.values():
        if len(group) > 1:
            listed = " and ".join(f"{var}={name!r}" for var, name in group)
            problems.append(
                f"{listed} collide: Kafka treats '.' and '_' in topic names as the same (metric names) and refuses "
                f"to hold both; rename {group[-1][0]}"
            )


def files_apart(
    values: Mapping[str, Any], table: Sequence[SettingLike], passthrough: Sequence[PassThrough], problems: list[str]
) -> None:
    readers = [(s.var, values.get(s.name.lower(), "")) for s in table if isinstance(s.kind, ReadFile)]
    readers += [(p.var, p.value.strip()) for p in passthrough if p.prop.endswith(_KAFKA_FILES)]
    writers = [(s.var, values.get(s.name.lower(), "")) for s in table if isinstance(s.kind, WriteFile)]
    readers = [(var, path) for var, path in readers if path]
    writers = [(var, path) for var, path in writers if path]
    for i, (var, path) in enumerate(writers):
        _writable(var, path, problems)
        for other, other_path in writers[:i]:
            if _same(path, other_path):
                problems.append(
                    f"{other} and {var} are the same file ({path}): each snapshot needs a file of its own; "
                    f"point {var} at another"
                )
        for reader, reader_path in readers:
            if _same(path, reader_path):
                problems.append(
                    f"{var}={path} is the file of {reader}: the snapshot would overwrite it; point {var} at a file "
                    "of its own"
                )
    key = values.get("hmac_key_file", "")
    for reader, reader_path in readers:
        if key and reader != f"{PREFIX}HMAC_KEY_FILE" and _same(key, reader_path):
            problems.append(
                f"{PREFIX}HMAC_KEY_FILE={key} is also {reader}'s file: the pseudonymisation key must be a secret "
                f"file of its own (a Secret), not a file others read; point {PREFIX}HMAC_KEY_FILE at it"
            )


def _same(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _writable(var: str, path: str, problems: list[str]) -> None:
    folder = os.path.dirname(os.path.realpath(path)) or "."
    if os.path.isdir(path):
        problems.append(f"{var}={path} is a folder: give the path of a file in it, e.g. {path.rstrip('/')}/snapshot")
    elif not os.path.isdir(folder):
        problems.append(
            f"{var}={path}: folder {folder} does not exist; create it (a mounted volume) or point {var} elsewhere"
        )
    elif not os.access(folder, os.W_OK | os.X_OK):
        why = (
            "is on a read-only file system"
            if os.statvfs(folder).f_flag & os.ST_RDONLY
            else "is not writable by this user"
        )
        problems.append(
            f"{var}={path}: folder {folder} {why}; mount a writable volume there (e.g. an emptyDir), or unset {var}"
        )


def timings(values: Mapping[str, Any], problems: list[str]) -> None:
    shortest, longest = values.get("batch_min_wait_ms"), values.get("batch_timeout_ms")
    if shortest is not None and longest is not None and shortest > longest:
        problems.append(
            f"{PREFIX}BATCH_MIN_WAIT_MS={shortest} is above {PREFIX}BATCH_TIMEOUT_MS={longest}: the shortest wait "
            f"of a consume() call cannot exceed the longest; lower {PREFIX}BATCH_MIN_WAIT_MS"
        )
    stall, flush = values.get("health_stall_seconds"), values.get("revoke_flush_seconds")
    if stall is not None and flush is not None and longest is not None and stall <= longest / 1000 + flush:
        problems.append(
            f"{PREFIX}HEALTH_STALL_SECONDS={stall:g} is not above the longest healthy turn of the loop, "
            f"{PREFIX}BATCH_TIMEOUT_MS ({longest} ms) plus {PREFIX}REVOKE_FLUSH_SECONDS ({flush:g} s): /healthz "
            f"would fail, and the pod be restarted, during a rebalance; raise {PREFIX}HEALTH_STALL_SECONDS above "
            f"{longest / 1000 + flush:g}"
        )
    scan = values.get("recipients_interval_seconds")
    if scan is not None and 0 < scan < MIN_RECIPIENTS_INTERVAL:
        problems.append(
            f"{PREFIX}RECIPIENTS_INTERVAL_SECONDS={scan:g} is below {MIN_RECIPIENTS_INTERVAL} s: each scan asks the "
            "broker for every consumer group's offsets; set 0 to disable the scan, or at least "
            f"{MIN_RECIPIENTS_INTERVAL}"
        )


def unknown_variables(env: Mapping[str, str], table: Sequence[SettingLike], problems: list[str]) -> None:
    """A TF_ variable that is no setting, within two edits of one: a typo that would leave the default."""
    known = [s.var for s in table]
    for var in env:
        if not var.startswith(PREFIX) or var in known or var.startswith(_IGNORED_PREFIXES):
            continue
        close = [k for k in known if _distance(var, k, 2) <= 2]
        if close:
            problems.append(f"{var} is not a setting (so the default of {close[0]} applies): did you mean {close[0]}?")


def _distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, cut short once it exceeds `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]
