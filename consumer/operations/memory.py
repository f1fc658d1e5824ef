"""The memory budget that start-up computes (and logs): the limit, and what the settings need of it.

The limit is the container's (cgroup v2 `memory.max`, or v1 `memory.limit_in_bytes`, the lowest on
the way up from the process's cgroup) or else the machine's memory. The need:

- the opt-out Bloom filter (consumer/optouts/filter.py `bloom_bytes`: capacity and rate) and, under
  an opt-in policy, the consent set (`slots_for(capacity)` slots of 8 bytes); each counted twice
  when its snapshot is on: saving copies the table, loading holds the file's bytes beside it;
- the producers' queues (queue.buffering.max.kbytes: 128 MiB as consumer/service/client_configs.py sets it, and
  the revocation emitter's 16 MiB)
  and each fetching consumer's pre-fetch queue (queued.max.messages.kbytes, librdkafka's 64 MiB):
  the input consumer, the opt-out feed, the revocation emitter, and the consent feed if any;
- a baseline for Python, the libraries and librdkafka's threads: 96 MiB (an idle service measures
  63 MiB resident; the rest is head-room for the decoder's caches and the allocator).

Not counted: batches held for their sync (up to 4 of TF_BATCH_SIZE records, bounded by the fetch
sizes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer.changes.changeset import ACCOUNT_BYTES
from consumer.consents.fingerprints import slots_for
from consumer.consents.history import USER_BYTES
from consumer.optouts.filter import bloom_bytes

MIB = 1 << 20
BASELINE_BYTES = 96 * MIB


def machine_memory() -> int:
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def memory_limit(proc: Path = Path("/proc"), root: Path = Path("/")) -> tuple[int, str]:
    """(bytes, where the figure comes from): the lowest cgroup memory limit, or the machine's memory."""
    best = (machine_memory(), "machine memory")
    for limit, source in _cgroup_limits(proc, root):
        if limit < best[0]:
            best = (limit, source)
    return best


def _cgroup_limits(proc: Path, root: Path) -> Iterator[tuple[int, str]]:
    try:
        memberships = (proc / "self" / "cgroup").read_text().splitlines()
        mounts = (proc / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return
    v2_path = next((line[3:] for line in memberships if line.startswith("0::")), None)
    v1_path = None
    for line in memberships:
        parts = line.split(":", 2)
        if len(parts) == 3 and "memory" in parts[1].split(","):
            v1_path = parts[2]
    for line in mounts:
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        fstype, options = fields[sep + 1], fields[sep + 3] if len(fields) > sep + 3 else ""
        mount_root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup2" and v2_path is not None:
            yield from _walk(root, mount_point, mount_root, v2_path, "memory.max", "cgroup v2 memory.max")
        elif fstype == "cgroup" and "memory" in options.split(",") and v1_path is not None:
            yield from _walk(
                root, mount_point, mount_root, v1_path, "memory.limit_in_bytes", "cgroup v1 memory.limit_in_bytes"
            )


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _walk(root: Path, mount_point: str, mount_root: str, path: str, name: str, what: str) -> Iterator[tuple[int, str]]:
    """The limit files from the process's cgroup up to the mount's top (a parent's limit applies too)."""
    top = root / mount_point.lstrip("/")
    relative = path[len(mount_root) :] if mount_root != "/" and path.startswith(mount_root) else path
    here = top / relative.strip("/")
    if not here.is_dir():
        here = top  # a cgroup namespace, or a path this mount does not show: the mount's own limit
    while True:
        limit = _read_limit(here / name)
        if limit is not None:
            yield limit, f"{what} ({here / name})"
        if here == top or top not in here.parents:
            return
        here = here.parent


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def size(n: float) -> str:
    """1536 -> '1.5 KiB'; 25769803776 -> '24 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            text = f"{n:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Table:
    """A capacity setting and the bytes one copy of its table needs."""

    var: str
    capacity: int
    copies: int  # 2 with a snapshot
    bytes_for: Callable[[int], int]
    what: str
    label: str

    @property
    def need(self) -> int:
        return self.bytes_for(self.capacity) * self.copies

    def largest_fitting(self, room: int) -> int:
        """The largest capacity whose tables fit in `room` bytes (0: none)."""
        low, high = 0, max(1, self.capacity)
        while low < high:
            mid = (low + high + 1) // 2
            if mid >= 1 and self.bytes_for(mid) * self.copies <= room:
                low = mid
            else:
                high = mid - 1
        return low


@dataclass(frozen=True)
class MemoryBudget:
    limit: int
    source: str
    tables: tuple[Table, ...]
    producer_queue: int
    consumer_queues: int
    baseline: int = BASELINE_BYTES

    @classmethod
    def compute(
        cls,
        settings: Any,
        producer_queue_bytes: int,
        consumer_queue_bytes: int,
        fetching_consumers: int,
        limit: int,
        source: str,
    ) -> MemoryBudget:
        s = settings
        tables = [
            Table(
                "TF_OPTOUT_CAPACITY",
                s.optout_capacity,
                2 if s.optout_snapshot_path is not None else 1,
                lambda c: bloom_bytes(c, s.optout_fp_rate),
                f"a Bloom filter at {s.optout_fp_rate:g}",
                "opt-out filter",
            ),
            Table(
                "TF_CHANGES_CAPACITY",
                s.changes_capacity,
                2 if s.changes_snapshot_path is not None else 1,
                lambda c: bloom_bytes(c, s.changes_fp_rate),
                f"a Bloom filter at {s.changes_fp_rate:g}",
                "stopped records",
            ),
            Table(
                "TF_ACCOUNT_CORRECTIONS_CAPACITY",
                s.account_corrections_capacity,
                2 if s.changes_snapshot_path is not None else 1,
                lambda c: c * ACCOUNT_BYTES,
                f"corrected accounts at {ACCOUNT_BYTES} bytes each",
                "corrected accounts",
            ),
        ]
        if s.consent_topic is not None:
            tables.append(
                Table(
                    "TF_CONSENT_CAPACITY",
                    s.consent_capacity,
                    2 if s.consent_snapshot_path is not None else 1,
                    lambda c: slots_for(c) * 8,
                    "a consent set",
                    "consent set",
                )
            )
            tables.append(
                Table(
                    "TF_CONSENT_WITHDRAWALS_CAPACITY",
                    s.consent_withdrawals_capacity,
                    2 if s.consent_snapshot_path is not None else 1,
                    lambda c: c * USER_BYTES,
                    f"a consent history at {USER_BYTES} bytes a user",
                    "consent history",
                )
            )
        return cls(limit, source, tuple(tables), producer_queue_bytes, consumer_queue_bytes * fetching_consumers)

    @property
    def need(self) -> int:
        return sum(t.need for t in self.tables) + self.producer_queue + self.consumer_queues + self.baseline

    def fields(self) -> dict[str, Any]:
        """The budget as one structured log line."""
        one = {t.var: t.bytes_for(t.capacity) for t in self.tables}
        return {
            "limit_bytes": self.limit,
            "source": self.source,
            "need_bytes": self.need,
            "optout_filter_bytes": one.get("TF_OPTOUT_CAPACITY", 0),
            "consent_set_bytes": one.get("TF_CONSENT_CAPACITY", 0),
            "change_set_bytes": one.get("TF_CHANGES_CAPACITY", 0) + one.get("TF_ACCOUNT_CORRECTIONS_CAPACITY", 0),
            "snapshot_copies_bytes": sum(one[t.var] * (t.copies - 1) for t in self.tables),
            "producer_queue_bytes": self.producer_queue,
            "consumer_queues_bytes": self.consumer_queues,
            "baseline_bytes": self.baseline,
        }

    def problems(self) -> list[str]:
        """Over budget: one line naming the capacity that takes most, with the figures and the fix."""
        need = self.need
        if need <= self.limit:
            return []
        blame = max(self.tables, key=lambda t: t.need)
        room = self.limit - (need - blame.need)
        fits = blame.largest_fitting(room)
        copies = " x2: a snapshot copies it" if blame.copies == 2 else ""
        fix = (
            f"lower {blame.var} to at most {fits:,} or raise the memory limit"
            if fits
            else f"raise the memory limit: the rest alone needs {size(need - blame.need)}"
        )
        return [
            f"{blame.var}={blame.capacity} needs {size(blame.need)} for {blame.what}{copies}, and the service "
            f"{size(need)} in all ({self._breakdown()}), over the memory limit of {size(self.limit)} "
            f"({self.source}): {fix}"
        ]

    def _breakdown(self) -> str:
        parts = [f"{t.label} {size(t.need)}" for t in self.tables]
        parts += [
            f"producer queue {size(self.producer_queue)}",
            f"consumer queues {size(self.consumer_queues)}",
            f"baseline {size(self.baseline)}",
        ]
        return ", ".join(parts)
