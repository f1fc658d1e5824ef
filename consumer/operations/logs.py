"""Structured JSON logs (structlog, serialised with orjson), one object per line on stdout.

Never log a user id, a birth date, a key or text: log counts, topic names, partitions, offsets,
error names. The per-batch line is at debug level; the periodic summary at info.
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", stream=None) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.BytesLoggerFactory(stream or sys.stdout.buffer),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name).bind(logger=name)


class _ToStructlog(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self._log = get("librdkafka")

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        getattr(self._log, level if level in ("debug", "info", "warning", "error") else "error")(
            "librdkafka", message=record.getMessage()
        )


def kafka_logger() -> logging.Logger:
    """A stdlib logger for librdkafka's own log lines (the `logger` client property), so they come out
    as JSON like everything else instead of plain text on stderr. They name brokers and topics only."""
    logger = logging.getLogger("training_filter.librdkafka")
    if not logger.handlers:
        logger.addHandler(_ToStructlog())
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger
