"""/healthz and /readyz (consumer/operations/health.py serves them on their own thread), answered
from the loop's `State` alone, so that they answer from the first moment, before any part is built."""

from __future__ import annotations

import time
from typing import Any

from consumer.operations.settings import Settings
from consumer.service.state import State, finite


class Probes:
    def __init__(self, settings: Settings, state: State) -> None:
        self.settings = settings
        self.state = state

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        """Alive while the loop turns (a stall past TF_HEALTH_STALL_SECONDS: the pod is restarted)."""
        stalled = time.monotonic() - self.state.last_tick
        return stalled < self.settings.health_stall_seconds, {"loop_seconds_since_turn": round(stalled, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready to take input: subscribed, not paused or stopping, the feeds current, the registry up."""
        st = self.state
        behind = st.feeds_behind
        feed_ok = behind <= self.settings.optout_max_lag_seconds
        ok = feed_ok and st.subscribed and not st.stopping and not st.paused and st.registry_error is None
        return ok, {
            "optout_feed_seconds_behind": finite(behind),
            "schema_registry_error": st.registry_error,
            "subscribed": st.subscribed,
            "assigned_partitions": len(st.assigned),
            "input_paused": st.paused,
            "stopping": st.stopping,
        }
