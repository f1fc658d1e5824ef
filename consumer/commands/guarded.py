"""How an operator command that talks to Kafka ends: its exit status and the one line that says why.

0: done; 1: it could not go on (a topic that cannot be read, the output refused, stopped before the end:
running it again goes on), with the error's name, never a record's content; 2: a configuration error,
one line per problem naming what to fix (TF_* variables or the command's options). SIGTERM and SIGINT
ask it to stop after the batch in hand (`State.stopping`).
"""

from __future__ import annotations

import signal
import threading
import traceback
from collections.abc import Callable
from typing import IO, Any

import orjson

from consumer.commands.transactional_pass import PassError
from consumer.datapath.delivery import FatalDeliveryError
from consumer.feeds.ends import FeedError
from consumer.operations.settings import ConfigError
from consumer.service.state import State


class UsageError(ValueError):
    """The command's options are wrong: exit status 2, with what to fix."""


def guarded(command: str, err: IO[str], body: Callable[[State], int], state: State | None = None) -> int:
    state = state if state is not None else State()
    before = {}
    if threading.current_thread() is threading.main_thread():
        before = {sig: signal.signal(sig, state.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return body(state)
    except (ConfigError, UsageError) as exc:
        for line in getattr(exc, "problems", None) or [str(exc)]:
            err.write(f"training-filter {command}: invalid configuration: {line}\n")
        return 2
    except (PassError, FeedError, FatalDeliveryError) as exc:
        err.write(f"training-filter {command}: {exc}\n")
        return 1
    except Exception as exc:
        # The type and the frames only: an exception's message could quote a value from a record.
        err.write(f"training-filter {command}: crashed: {type(exc).__name__}\n")
        err.write("".join(traceback.format_tb(exc.__traceback__)))
        return 1
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def report(command: str, summary: dict[str, Any], text: str, as_json: bool, out: IO[str], err: IO[str]) -> int:
    """The summary on standard output (`text`, or `summary` as one JSON object); the exit status: 0 when the
    command reached its end, 1 when it was stopped before (run again, it goes on)."""
    out.write(orjson.dumps(summary).decode() + "\n" if as_json else text)
    out.flush()
    if summary["finished"]:
        return 0
    err.write(f"training-filter {command}: stopped before the end: run the same command again to go on\n")
    return 1
