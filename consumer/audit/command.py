"""`training-filter audit recipients`: the record of recipients (GDPR Art. 19) on standard output, a
table for people or JSON Lines for programs, one recipient a line. The exit status gates a cron job:
0 every recipient reads the revocations topic and none has sat on one longer than the bound; 1 one
does not, or the scan failed (the error's name on standard error); 2 a configuration error.

It needs no key and decides nothing: only TF_BOOTSTRAP_SERVERS (or --bootstrap-servers), the topic
and group names of the service (TF_TRAINING_TOPIC, TF_REVOCATIONS_TOPIC, TF_GROUP_ID) and the
TF_KAFKA_* pass-through, read and checked as the service reads them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from consumer.audit.acknowledgements import Recipient, problems
from consumer.audit.recipients import RecipientScan, ScanError, Topics
from consumer.commands.guarded import guarded
from consumer.operations import kafka_settings, logs
from consumer.operations.clients import Clients, KafkaClients
from consumer.operations.settings import BY_NAME, ConfigError
from consumer.service.state import State

_NAMES = ("BOOTSTRAP_SERVERS", "GROUP_ID", "TRAINING_TOPIC", "REVOCATIONS_TOPIC")


def scan_config(env: Mapping[str, str], bootstrap: str | None) -> tuple[dict[str, Any], Topics]:
    """The client configuration and the topics, from the TF_ variables the command reads (a
    ConfigError names each problem)."""
    problems_found: list[str] = []
    values: dict[str, Any] = {}
    for name in _NAMES:
        setting = BY_NAME[name]
        raw = bootstrap if name == "BOOTSTRAP_SERVERS" and bootstrap else env.get(setting.var, setting.default)
        if raw is None:
            problems_found.append(f"{setting.var} is required (or give --bootstrap-servers): {setting.help}")
            continue
        try:
            values[name] = setting.parse(raw)
        except ValueError as exc:
            where = "--bootstrap-servers" if name == "BOOTSTRAP_SERVERS" and bootstrap else setting.var
            problems_found.append(f"{where}={raw!r} is invalid: {exc}")
    passthrough = kafka_settings.read_passthrough(env, problems_found)
    if problems_found:
        raise ConfigError(problems_found)
    config = {
        "bootstrap.servers": values["BOOTSTRAP_SERVERS"],
        **kafka_settings.scope(passthrough, "common"),
        **kafka_settings.scope(passthrough, "consumer"),
        "logger": logs.kafka_logger(),
    }
    topics = Topics(values["TRAINING_TOPIC"], values["REVOCATIONS_TOPIC"], values["GROUP_ID"])
    return config, topics


def main_recipients(args: Any, out: IO[str], err: IO[str], clients: Clients | None = None) -> int:
    def body(state: State) -> int:
        config, topics = scan_config(os.environ, args.bootstrap_servers)
        if not 0 < args.timeout <= 300:
            raise ConfigError("--timeout must be above 0 and at most 300 seconds")
        if not 0 < args.bound <= 365 * 86_400:
            raise ConfigError("--bound must be above 0 and at most a year, in seconds")
        scan = RecipientScan(clients or KafkaClients(), config, topics, args.timeout)
        try:
            recipients = scan.scan()
        except ScanError as exc:
            err.write(f"training-filter audit recipients: the scan failed: {exc}\n")
            return 1
        finally:
            scan.close()
        now_ms = int(time.time() * 1000)
        lines = [as_json(r, args.bound, now_ms) for r in recipients]
        if args.json:
            out.writelines(orjson.dumps(line).decode() + "\n" for line in lines)
        else:
            out.write(table(lines, topics, args.bound))
        out.flush()
        return 1 if any(line["problems"] for line in lines) else 0

    return guarded("audit recipients", err, body)


def as_json(recipient: Recipient, bound: float, now_ms: int) -> dict[str, Any]:
    """One recipient, as `--json` prints it (docs/recipients.md: how to read it)."""
    return {
        "group": recipient.group,
        "reads_revocations": recipient.reads_revocations,
        "revocations_group": recipient.acknowledged_by,
        "unacknowledged": recipient.unacknowledged,
        "oldest_unacknowledged_at": _time(recipient.oldest_timestamp_ms),
        "oldest_unacknowledged_seconds": round(recipient.oldest_seconds(now_ms), 3),
        "partitions": [
            {
                "partition": p.partition,
                "committed": p.committed,
                "end": p.end,
                "unacknowledged": p.unacknowledged,
                # The offsets [first_unacknowledged, end) are the revocations not yet acknowledged.
                "first_unacknowledged": p.oldest_offset,
                "oldest_unacknowledged_at": _time(p.oldest_timestamp_ms),
            }
            for p in recipient.partitions
        ],
        "problems": problems(recipient, bound, now_ms),
    }


def table(lines: list[dict[str, Any]], topics: Topics, bound: float) -> str:
    """The human table: one row a recipient, then what falls short of Art. 19."""
    header = ("group", "reads revocations", "committed (partition:offset)", "unacknowledged", "oldest waited")
    rows = [header]
    for line in lines:
        committed = " ".join(
            f"{p['partition']}:{p['committed']}" for p in line["partitions"] if p["committed"] is not None
        )
        waited = _duration(line["oldest_unacknowledged_seconds"]) if line["unacknowledged"] else "-"
        reads = "yes" if line["reads_revocations"] else "NO"
        if line["reads_revocations"] and line["revocations_group"] != line["group"]:
            reads += f" (as {line['revocations_group']})"
        rows.append((line["group"], reads, committed or "-", str(line["unacknowledged"]), waited))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    text = "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in rows
    )
    short = [line for line in lines if line["problems"]]
    text += (
        f"\n{len(lines)} recipient(s) of {topics.training}; revocations topic {topics.revocations}; "
        f"bound {bound:g} s: {len(short)} fall(s) short\n"
    )
    for line in short:
        text += "".join(f"  {line['group']}: {problem}\n" for problem in line["problems"])
    return text


def _time(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 120:
        return f"{seconds:.0f} s"
    if whole < 7200:
        return f"{whole // 60} min"
    return f"{whole // 3600} h {whole % 3600 // 60} min"
