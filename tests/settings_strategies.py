"""Hypothesis strategies of service environments: valid settings, and the ways a setting goes wrong
(huge, negative, nan, inf, empty, garbage, duplicate topic names, bad librdkafka properties,
capacities of 1e14). Shared by the in-process property test and the `training-filter run` one."""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

from consumer.operations.setting_kinds import Integer, Number, Topic
from consumer.operations.settings import SETTINGS, Setting
from rules.policy import default_policy_path

# The settings a drawn environment may change (the rest stay as the base gives them): not the ones
# that point at other services or files (registry, policies), which the file strategies cover.
NUMERIC = [s for s in SETTINGS if isinstance(s.kind, (Integer, Number))]
TOPICS = [s for s in SETTINGS if isinstance(s.kind, Topic)]

BAD_NUMBERS = st.sampled_from(
    ["", " ", "nan", "NaN", "inf", "-inf", "1e400", "-1", "0", "-0.0", "1e14", "100000000000000", "9" * 30, "x", "1_0"]
)
KAFKA_PROPERTIES = st.sampled_from(
    [
        ("TF_KAFKA_NO_SUCH_PROPERTY", "1"),
        ("TF_CONSUMER_KAFKA_FETCH_MIN_BYTES", "-5"),
        ("TF_CONSUMER_KAFKA_FETCH_MIN_BYTES", "10"),
        ("TF_PRODUCER_KAFKA_LINGER_MS", "soon"),
        ("TF_PRODUCER_KAFKA_LINGER_MS", "20"),
        ("TF_KAFKA_SASL_MECHANISM", "NOPE"),
        ("TF_KAFKA_SECURITY_PROTOCOL", "carrier-pigeon"),
        ("TF_KAFKA_MESSAGE_MAX_BYTES", "100000000"),
        ("TF_PRODUCER_KAFKA_MESSAGE_MAX_BYTES", "big"),
        ("TF_PRODUCER_KAFKA_QUEUE_BUFFERING_MAX_KBYTES", "0"),
        ("TF_PRODUCER_KAFKA_QUEUE_BUFFERING_MAX_KBYTES", "65536"),
        ("TF_CONSUMER_KAFKA_QUEUED_MAX_MESSAGES_KBYTES", "1e3"),
        ("TF_CONSUMER_KAFKA_MAX_POLL_INTERVAL_MS", "1000"),
        ("TF_KAFKA_CLIENT_ID", "tf-property-test"),
        ("TF_KAFKA_ERROR_CB", "x"),
        ("TF_KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9092"),
        ("TF_KAFKA_GROUP_ID", "other"),
        ("TF_CONSUMER_KAFKA_ISOLATION_LEVEL", "read_uncommitted"),
        ("TF_KAFKA_", "empty property name"),
        ("TF_KAFKA_DEFAULT_TOPIC_CONFIG", "x"),
        ("TF_PRODUCER_KAFKA_TRANSACTION_TIMEOUT_MS", "1000"),
        ("TF_KAFKA_SOCKET_TIMEOUT_MS", "nan"),
    ]
)
GARBAGE_PROPERTY = st.tuples(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=20).map(lambda s: f"TF_KAFKA_{s}"),
    st.text(max_size=12).filter(lambda s: "\0" not in s),
)


def valid_number(setting: Setting) -> st.SearchStrategy[str]:
    kind = setting.kind
    assert isinstance(kind, (Integer, Number))
    if isinstance(kind, Integer):
        return st.integers(int(kind.low), int(kind.high)).map(str)
    return st.floats(kind.low, kind.high, allow_nan=False, allow_infinity=False).map(repr)


def out_of_range(setting: Setting) -> st.SearchStrategy[str]:
    kind = setting.kind
    assert isinstance(kind, (Integer, Number))
    above = kind.high * 10 + 1 if kind.high > 0 else 1
    return st.sampled_from([str(int(above)) if isinstance(kind, Integer) else repr(float(above)), str(kind.low - 1)])


@st.composite
def changes(draw: st.DrawFn, topic_names: list[str], numeric: list[Setting] | None = None) -> dict[str, str]:
    """A few settings changed from a valid base: valid values, bad values, or duplicate topic names."""
    out: dict[str, str] = {}
    for setting in draw(st.lists(st.sampled_from(numeric or NUMERIC), max_size=4, unique_by=lambda s: s.name)):
        out[f"TF_{setting.name}"] = draw(
            st.one_of(valid_number(setting), valid_number(setting), out_of_range(setting), BAD_NUMBERS)
        )
    if draw(st.booleans()):
        role = draw(st.sampled_from([s for s in TOPICS if s.name != "CONSENT_TOPIC"]))
        out[f"TF_{role.name}"] = draw(st.sampled_from([*topic_names, "", "a b", ".."]))
    for var, value in draw(st.lists(st.one_of(KAFKA_PROPERTIES, GARBAGE_PROPERTY), max_size=3)):
        out[var] = value
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.sampled_from(["TF_OPTOUT_CAPACITY", "TF_CONSENT_CAPACITY"]))] = "100000000000000"
    return out


FILE_SETTINGS = [
    "TF_HMAC_KEY_FILE",
    "TF_POLICY_FILE",
    "TF_SHADOW_POLICY_FILE",
    "TF_OPTOUT_SNAPSHOT_PATH",
    "TF_CONSENT_SNAPSHOT_PATH",
    "TF_SCHEMA_REGISTRY_PASSWORD_FILE",
    "TF_SCHEMA_REGISTRY_CA_LOCATION",
    "TF_KAFKA_SSL_CA_LOCATION",
]


def make_files(folder: Path) -> dict[str, str]:
    """Paths of every sort a file setting may be given: missing, a folder, binary, empty, real ones."""
    (folder / "binary").write_bytes(bytes(range(256)) * 4)
    (folder / "empty").write_bytes(b"")
    (folder / "key").write_bytes(b"k" * 40)
    (folder / "policy.toml").write_text(default_policy_path().read_text())
    return {
        "missing": str(folder / "missing" / "file"),
        "folder": str(folder),
        "binary": str(folder / "binary"),
        "empty": str(folder / "empty"),
        "key": str(folder / "key"),
        "policy": str(folder / "policy.toml"),
        "new file": str(folder / "snapshot"),
    }


@st.composite
def file_changes(draw: st.DrawFn, paths: dict[str, str]) -> dict[str, str]:
    """Up to three file settings pointed at drawn paths (the same path for two settings included)."""
    out: dict[str, str] = {}
    for var in draw(st.lists(st.sampled_from(FILE_SETTINGS), max_size=3, unique=True)):
        out[var] = draw(st.sampled_from(sorted(paths.values())))
    if out and draw(st.booleans()):
        out["TF_SCHEMA_REGISTRY_URL"] = "http://127.0.0.1:1"
    return out


VALID_PROPERTIES = st.sampled_from(
    [
        ("TF_KAFKA_CLIENT_ID", "tf-property-test"),
        ("TF_CONSUMER_KAFKA_FETCH_MIN_BYTES", "10"),
        ("TF_PRODUCER_KAFKA_LINGER_MS", "20"),
        ("TF_PRODUCER_KAFKA_QUEUE_BUFFERING_MAX_KBYTES", "65536"),
        ("TF_KAFKA_SOCKET_KEEPALIVE_ENABLE", "true"),
    ]
)


@st.composite
def valid_changes(draw: st.DrawFn, numeric: list[Setting] | None = None) -> dict[str, str]:
    """Settings each valid alone (together they may still disagree, e.g. a stall bound under a timeout)."""
    out: dict[str, str] = {}
    for setting in draw(st.lists(st.sampled_from(numeric or NUMERIC), max_size=3, unique_by=lambda s: s.name)):
        out[f"TF_{setting.name}"] = draw(valid_number(setting))
    for var, value in draw(st.lists(VALID_PROPERTIES, max_size=2)):
        out[var] = value
    return out


def names_a_variable(line: str, env: dict[str, str]) -> bool:
    """Does a problem line name a TF_ variable that exists (a setting, or one the environment set)?"""
    known = {f"TF_{s.name}" for s in SETTINGS} | {k for k in env if k.startswith("TF_")}
    return any(var in line for var in known)
