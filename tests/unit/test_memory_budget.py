"""The memory budget: the container's limit (cgroup v2 or v1) or the machine's memory, against what the
capacities and the fixed overheads need."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastbloom_rs import BloomFilter

from consumer.consents.fingerprints import ConsentSet, slots_for
from consumer.operations.memory import BASELINE_BYTES, MemoryBudget, machine_memory, memory_limit
from consumer.operations.settings import ConfigError, load_settings
from consumer.optouts.filter import OptOutFilter, bloom_bytes
from rules.policy import default_policy_path

MIB = 1 << 20
BASE = {"TF_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "TF_HMAC_KEY": "x" * 32}
DEFAULT_POLICY = default_policy_path().read_text()
OPT_IN_POLICY = DEFAULT_POLICY.replace('version = "', 'consent_model = "opt_in"\nversion = "opt-in-', 1)


def fake_host(tmp_path: Path, cgroup: str, mountinfo: list[str], files: dict[str, str]) -> tuple[Path, Path]:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "mountinfo").write_text("\n".join(mountinfo) + "\n")
    root = tmp_path / "root"
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return proc, root


V2_MOUNT = "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate"
V1_MOUNT = "40 35 0:36 / /sys/fs/cgroup/memory rw,nosuid shared:20 - cgroup cgroup rw,memory"


# -- the limit ---------------------------------------------------------------------------------------


def test_cgroup_v2_memory_max_of_the_process_cgroup(tmp_path):
    proc, root = fake_host(
        tmp_path,
        "0::/kubepods/pod1/c1\n",
        [V2_MOUNT],
        {"/sys/fs/cgroup/kubepods/pod1/c1/memory.max": "671088640\n", "/sys/fs/cgroup/kubepods/memory.max": "max\n"},
    )
    limit, source = memory_limit(proc, root)
    assert limit == min(671088640, machine_memory())
    assert "cgroup v2 memory.max" in source


def test_cgroup_v2_a_parents_lower_limit_applies(tmp_path):
    proc, root = fake_host(
        tmp_path,
        "0::/a/b\n",
        [V2_MOUNT],
        {"/sys/fs/cgroup/a/b/memory.max": "max\n", "/sys/fs/cgroup/a/memory.max": str(300 * MIB)},
    )
    assert memory_limit(proc, root)[0] == 300 * MIB


def test_cgroup_v2_inside_a_cgroup_namespace(tmp_path):
    """In a container the process's cgroup is '/', the mount's root is the container's own cgroup."""
    proc, root = fake_host(tmp_path, "0::/\n", [V2_MOUNT], {"/sys/fs/cgroup/memory.max": str(640 * MIB)})
    assert memory_limit(proc, root)[0] == 640 * MIB


def test_cgroup_v1_memory_limit_in_bytes(tmp_path):
    proc, root = fake_host(
        tmp_path,
        "5:cpu:/\n4:memory:/docker/abc\n0::/\n",
        [V1_MOUNT],
        {"/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": str(896 * MIB)},
    )
    limit, source = memory_limit(proc, root)
    assert limit == 896 * MIB and "cgroup v1 memory.limit_in_bytes" in source


def test_cgroup_v1_unlimited_is_the_machine(tmp_path):
    proc, root = fake_host(
        tmp_path,
        "4:memory:/\n",
        [V1_MOUNT],
        {"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712"},
    )
    limit, source = memory_limit(proc, root)
    assert limit == machine_memory() and "machine" in source


def test_no_cgroup_is_the_machines_memory(tmp_path):
    proc, root = fake_host(tmp_path, "", [], {})
    assert memory_limit(proc, root) == (machine_memory(), "machine memory")
    assert machine_memory() == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_this_machines_limit_is_read():
    limit, source = memory_limit()
    assert 0 < limit <= machine_memory() and source


# -- the need ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("capacity,fp_rate", [(1000, 1e-6), (200_000, 1e-6), (1_000_000, 1e-3), (123_457, 1e-9)])
def test_the_bloom_filter_bytes_are_what_fastbloom_allocates(capacity, fp_rate):
    assert bloom_bytes(capacity, fp_rate) == len(BloomFilter(capacity, fp_rate).get_bytes())
    assert bloom_bytes(capacity, fp_rate) == OptOutFilter(capacity, fp_rate).size_bytes


def test_the_consent_bytes_are_the_sets_table():
    assert slots_for(100_000) * 8 == ConsentSet(100_000).size_bytes


def budget(env: dict[str, str], limit: int) -> MemoryBudget:
    settings = load_settings(env)
    return MemoryBudget.compute(
        settings,
        producer_queue_bytes=128 * MIB,
        consumer_queue_bytes=64 * MIB,
        fetching_consumers=4 if settings.consent_topic else 3,
        limit=limit,
        source="test",
    )


def test_the_shipped_pod_limits_fit_the_default_capacities(tmp_path):
    """deploy/kubernetes: 704 MiB (opt-out model), 1152 MiB (opt-in component), snapshots on."""
    snapshots = {"TF_OPTOUT_SNAPSHOT_PATH": str(tmp_path / "optouts.snapshot")}
    assert budget({**BASE, **snapshots}, 704 * MIB).problems() == []
    policy = tmp_path / "opt-in.toml"
    policy.write_text(OPT_IN_POLICY)
    opt_in = {
        **BASE,
        **snapshots,
        "TF_POLICY_FILE": str(policy),
        "TF_CONSENT_TOPIC": "privacy.consents.v1",
        "TF_CONSENT_SNAPSHOT_PATH": str(tmp_path / "consents.snapshot"),
    }
    assert budget(opt_in, 1024 * MIB).problems() == []
    over = budget(opt_in, 640 * MIB).problems()
    assert len(over) == 1 and "TF_CONSENT_CAPACITY" in over[0]


def test_a_snapshot_counts_its_table_twice(tmp_path):
    plain = budget(BASE, 1 << 40)
    snap = budget({**BASE, "TF_OPTOUT_SNAPSHOT_PATH": str(tmp_path / "s")}, 1 << 40)
    assert snap.need - plain.need == bloom_bytes(10_000_000, 1e-6)


@pytest.mark.parametrize("var", ["TF_OPTOUT_CAPACITY", "TF_CONSENT_CAPACITY"])
def test_a_capacity_of_1e14_is_refused_with_the_figures_and_the_fix(tmp_path, var):
    policy = tmp_path / "opt-in.toml"
    policy.write_text(OPT_IN_POLICY)
    env = {**BASE, "TF_POLICY_FILE": str(policy), "TF_CONSENT_TOPIC": "c", var: "100000000000000"}
    limit = 24 << 30
    lines = budget(env, limit).problems()
    assert len(lines) == 1
    line = lines[0]
    assert var in line and "100000000000000" in line and "24 GiB" in line and "at most" in line
    fits = int(line.split("at most ")[1].split()[0].replace(",", ""))
    assert budget({**env, var: str(fits)}, limit).problems() == []
    assert budget({**env, var: str(fits + max(1, fits // 1000))}, limit).problems() != []


def test_the_budget_is_one_structured_line():
    fields = budget(BASE, 1 << 33).fields()
    assert fields["limit_bytes"] == 1 << 33 and fields["source"] == "test"
    parts = {k: v for k, v in fields.items() if k.endswith("_bytes") and k not in ("need_bytes", "limit_bytes")}
    assert fields["need_bytes"] == sum(parts.values())
    assert fields["baseline_bytes"] == BASELINE_BYTES


def test_the_validation_entry_point_refuses_1e14(tmp_path):
    from consumer.service.preflight import validate

    with pytest.raises(ConfigError) as caught:
        validate({**BASE, "TF_METRICS_PORT": "0", "TF_OPTOUT_CAPACITY": "100000000000000"})
    assert "TF_OPTOUT_CAPACITY" in str(caught.value)
