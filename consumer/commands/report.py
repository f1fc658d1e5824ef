"""`training-filter report [--window 7d] [--until TIME] [--out DIR]`: the effectiveness report
(docs/audit.md): DIR/report.html, one self-contained page of plots, and DIR/report.md, its twin.

Read from the audit topic (TF_AUDIT_TOPIC: receipts, verification results, recipients' snapshots) and
the service's privacy topics, named by the service's own settings (TF_*: the report runs where the
service's configuration is, and needs its pseudonymisation key to join opt-outs to their revocations).
With an audit key (TF_AUDIT_KEY_FILE or TF_AUDIT_KEY) every audit record's signature is checked and a
record not signed correctly is left out and counted on the page. Exit status 0 when both files are
written, 1 when a topic cannot be read, 2 for a wrong option or setting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from consumer import __version__
from consumer.audit import report_page
from consumer.audit.report_read import TopicReader, read_inputs
from consumer.audit.report_series import Window, build, parse_window
from consumer.commands.guarded import UsageError, guarded
from consumer.commands.jsonl import JsonRecordError, epoch_ms
from consumer.operations import logs
from consumer.operations.clients import Clients, KafkaClients
from consumer.operations.settings import load_settings
from consumer.wire.codec import Codec
from consumer.wire.registry import Registry


def window_of(args: Any, now_ms: int) -> Window:
    try:
        length = parse_window(args.window)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    until = now_ms
    if args.until is not None:
        try:
            until = epoch_ms(args.until, "--until")
        except JsonRecordError as exc:
            raise UsageError(str(exc).replace("field '--until'", "--until")) from exc
    return Window.ending(until, length)


def write_report(out_dir: Path, html: str, markdown: str) -> tuple[Path, Path]:
    """Both files, each written whole under a temporary name and renamed: a reader never sees half."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("report.html", html), ("report.md", markdown)):
        target = out_dir / name
        partial = out_dir / f".{name}.partial"
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)
        written.append(target)
    return written[0], written[1]


def main_report(
    args: Any,
    out: IO[str],
    err: IO[str],
    clients: Clients | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    def body(_state: Any) -> int:
        now_ms = int(clock() * 1000)
        window = window_of(args, now_ms)
        out_dir = Path(args.out)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--out {out_dir}: not a folder")
        settings = load_settings()
        audit = (settings.audit_topic, settings.audit_key)
        logs.configure(settings.log_level, stream=getattr(err, "buffer", None))
        codec = Codec(registry=Registry(settings.registry) if settings.registry is not None else None)
        reader = TopicReader(clients or KafkaClients(), settings)
        try:
            inputs, provenance = read_inputs(reader, codec, settings, audit, window.since_ms)
        finally:
            reader.close()
        report = build(window, inputs, provenance, now_ms, __version__)
        html_path, md_path = write_report(out_dir, report_page.html(report), report_page.markdown(report))
        out.write(f"wrote {html_path} and {md_path}\n")
        for line in report_page.header_lines(report):
            out.write(line + "\n")
        return 0

    return guarded("report", err, body)
