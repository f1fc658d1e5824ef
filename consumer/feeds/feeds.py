"""The feeds as the service uses them: the opt-out mirror, the change mirror (consumer/changes/), and
under an opt-in policy (active or shadow) the consent mirror, synced, probed and closed as one.

A batch is decided only when the gating feeds have reached their topics' ends, and each keeps its own
lag. The opt-out and change mirrors always gate input; under an opt-in active policy the consents
too. When only the shadow candidate is opt-in (`gate=False`) what the service emits does not depend
on consents, so they do not gate input (readiness, the sync before a batch, the pause when it lags):
the consents are read at start-up with the opt-out catch-up (without waiting for them), then synced
on a thread of their own every 100 ms (`BackgroundSync`), so that a slow consent topic neither delays
a batch nor is starved by the batches' sync budget. While it lags, the shadow counts more `no_consent`
than it would; its lag metric (`training_filter_consent_feed_lag_seconds{gates_input="false"}`) shows
when.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from consumer.feeds.background import BackgroundSync
from consumer.feeds.mirror import TopicMirror


class Feed(Protocol):
    """What the loop, the lifecycle and the probes ask of the feeds."""

    @property
    def caught_up_at(self) -> float | None: ...

    @property
    def last_error(self) -> str | None: ...

    def sync(self, timeout: float, everything: bool = False) -> bool: ...

    def seconds_behind(self) -> float: ...

    def close(self) -> None: ...


class Feeds:
    def __init__(
        self,
        optouts: TopicMirror[Any],
        consents: TopicMirror[Any] | None = None,
        gate: bool = True,
        log: Any = None,
        sync_timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        changes: TopicMirror[Any] | None = None,
    ) -> None:
        self.optouts = optouts
        self.changes = changes
        self.consents = consents
        self.gate = gate and consents is not None  # do the consents gate input?
        self.log = log
        self.sync_timeout = sync_timeout
        self.clock = clock
        self.consent_sync: BackgroundSync | None = None  # a shadow-only consent mirror, once caught up

    @property
    def gating(self) -> list[TopicMirror[Any]]:
        """The mirrors a batch waits for."""
        mirrors = [self.optouts]
        if self.changes is not None:
            mirrors.append(self.changes)
        if self.gate and self.consents is not None:
            mirrors.append(self.consents)
        return mirrors

    @property
    def caught_up_at(self) -> float | None:
        times = [m.caught_up_at for m in self.gating]
        return None if any(t is None for t in times) else min(t for t in times if t is not None)

    @property
    def last_error(self) -> str | None:
        return next((m.last_error for m in self.gating if m.last_error), None)

    def sync(self, timeout: float, everything: bool = False) -> bool:
        deadline = self.clock() + timeout
        synced = self.optouts.sync(timeout, everything)
        if self.changes is not None:
            synced = self.changes.sync(max(0.05, deadline - self.clock()), everything) and synced
        if self.consents is None:
            return synced
        if not self.gate:  # the batch waits for the opt-outs and the changes only
            if everything and self.consent_sync is None:  # start-up: the consents too, as time allows
                self.consents.sync(max(0.0, deadline - self.clock()), everything)
            elif self.consent_sync is None:
                self.consent_sync = BackgroundSync(self.consents, self.sync_timeout, self.log, name="consent")
                self.consent_sync.start()
            return synced
        consents = self.consents.sync(max(0.05, deadline - self.clock()), everything)
        return synced and consents

    def seconds_behind(self) -> float:
        return max(m.seconds_behind() for m in self.gating)

    def entries(self) -> dict[str, int]:
        """The sets' sizes, for the log lines (`optout_entries`, `consent_entries`)."""
        out = {"optout_entries": self.optouts.members.entries}
        if self.changes is not None:
            out["change_entries"] = self.changes.members.entries
        if self.consents is not None:
            out["consent_entries"] = self.consents.members.entries
        return out

    @contextlib.contextmanager
    def held_still(self) -> Iterator[list[tuple[str, str, int, int]]]:
        """Every mirror's lock for the length of a batch, and their positions meanwhile (feed, topic,
        partition, next offset): what a receipt says the batch was decided with (docs/audit.md) is then
        exactly what it was. Taken in one order, always, and never while holding another lock."""
        mirrors = [("optouts", self.optouts), ("changes", self.changes), ("consents", self.consents)]
        held = [(name, m) for name, m in mirrors if m is not None]
        with contextlib.ExitStack() as stack:
            for _, mirror in held:
                stack.enter_context(mirror.lock)
            yield [(name, t, p, o) for name, m in held for (t, p), o in sorted(m.positions.items())]

    def close(self) -> None:
        if self.consent_sync is not None:
            self.consent_sync.stop()
        self.optouts.close()
        if self.changes is not None:
            self.changes.close()
        if self.consents is not None:
            self.consents.close()
