"""The opt-out Bloom filter and its snapshot file."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.datapath.pseudonym import Pseudonymiser
from consumer.optouts.filter import OptOutFilter, SnapshotError, load_snapshot, write_snapshot

TOPICS = ["optouts", "revocations"]
IDS: dict[str, str | None] = {"optouts": "id-1", "revocations": None}
KEY_CHECK = Pseudonymiser(b"k" * 32).key_check()


def test_members_are_always_found_and_counted_once():
    f = OptOutFilter(10_000, 1e-6)
    users = [f"user-{i}" for i in range(5000)]
    assert all(f.add(u) for u in users)
    assert not f.add("user-1")
    assert f.entries == 5000
    assert all(u in f for u in users)
    assert all(f.contains(u.encode()) for u in users)
    false_positives = sum(f"other-{i}" in f for i in range(50_000))
    assert false_positives <= 2  # expected 0.05 at 1e-6
    assert 0 < f.estimated_fp_rate() < 1e-6


def test_ten_million_at_one_in_a_million_is_under_50_mib():
    f = OptOutFilter(10_000_000, 1e-6)
    assert f.size_bytes < 50 * 2**20
    assert len(f.snapshot_bytes()) == f.size_bytes


def test_snapshot_round_trip(tmp_path):
    f = OptOutFilter(1000, 1e-4)
    for i in range(300):
        f.add(f"u{i}")
    path = tmp_path / "snap"
    offsets = {("optouts", 0): 300, ("optouts", 1): 7, ("revocations", 0): 12}
    write_snapshot(path, f.header(offsets, IDS, KEY_CHECK), f.snapshot_bytes())
    loaded = load_snapshot(path, 1000, 1e-4, TOPICS, KEY_CHECK)
    assert loaded.offsets == offsets
    assert loaded.topic_ids == IDS
    assert loaded.filter.entries == 300
    assert all(f"u{i}" in loaded.filter for i in range(300))
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1] + b"\x01"), "digest"),
        (lambda p: p.write_bytes(b"not json\n" + p.read_bytes()), "unreadable"),
        (lambda p: p.unlink(), "no snapshot"),
    ],
)
def test_damaged_snapshots_are_refused(tmp_path, change, message):
    f = OptOutFilter(1000, 1e-4)
    f.add("u")
    path = tmp_path / "snap"
    write_snapshot(path, f.header({("optouts", 0): 1}, IDS, KEY_CHECK), f.snapshot_bytes())
    change(path)
    with pytest.raises(SnapshotError, match=message):
        load_snapshot(path, 1000, 1e-4, TOPICS, KEY_CHECK)


@pytest.mark.parametrize(
    "capacity,fp,topics,key_check,message",
    [
        (2000, 1e-4, TOPICS, KEY_CHECK, "capacity"),
        (1000, 1e-5, TOPICS, KEY_CHECK, "fp_rate"),
        (1000, 1e-4, ["optouts", "x"], KEY_CHECK, "topics"),
        (1000, 1e-4, ["optouts"], KEY_CHECK, "topics"),
        (1000, 1e-4, TOPICS, "another key's check", "another pseudonymisation key"),
    ],
)
def test_snapshot_for_other_parameters_is_refused(tmp_path, capacity, fp, topics, key_check, message):
    f = OptOutFilter(1000, 1e-4)
    path = tmp_path / "snap"
    write_snapshot(path, f.header({}, IDS, KEY_CHECK), f.snapshot_bytes())
    with pytest.raises(SnapshotError, match=message):
        load_snapshot(path, capacity, fp, topics, key_check)


def test_the_key_check_depends_on_the_key_and_does_not_show_it():
    key = b"s" * 32
    check = Pseudonymiser(key).key_check()
    assert check == Pseudonymiser(key).key_check() != Pseudonymiser(b"t" * 32).key_check()
    assert key.hex() not in check and "s" * 8 not in check


def test_pseudonym_is_hmac_sha256_hex_and_hides_the_key():
    import hmac

    key = b"s" * 32
    p = Pseudonymiser(key)
    assert p.pseudonym(b"alice") == hmac.new(key, b"alice", "sha256").hexdigest().encode()
    assert p.pseudonym(b"alice") == p.pseudonym(b"alice")
    assert p.pseudonym(b"alice") != Pseudonymiser(b"t" * 32).pseudonym(b"alice")
    assert "s" * 32 not in repr(p)
    with pytest.raises(ValueError):
        Pseudonymiser(b"short")


@settings(max_examples=300)
@given(key=st.binary(min_size=32, max_size=200), user_id=st.binary(max_size=100))
def test_pseudonym_equals_the_standard_library_hmac(key, user_id):
    import hmac

    assert Pseudonymiser(key).pseudonym(user_id) == hmac.new(key, user_id, "sha256").hexdigest().encode()
