"""The real image (built from this tree by deploy/image/build.py), run by podman the way the Kubernetes
Deployment runs it: uid/gid 10001, read-only root filesystem, every capability dropped, no privilege
escalation, writable tmpfs only where the Deployment mounts an emptyDir, the HMAC key as a read-only
file. `run` is tested against the session's real local Kafka (host network: the broker listens on
127.0.0.1) end to end, through SIGTERM."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.devtools.generator import StreamGenerator
from consumer.devtools.local_kafka import free_port
from consumer.wire.codec import REVOCATION, TRAINING_RECORD, Codec
from deploy.image import build
from tests.harness import HMAC_KEY, Topics, produce, pseudonym, read_all

# The first test also builds the image: seconds when cached, minutes from cold.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CODEC = Codec()
UID = 10001
GRACE_SECONDS = 10  # TF_SHUTDOWN_GRACE_SECONDS of the run test; podman stop waits 30 s before SIGKILL
# The Deployment's securityContext, in podman's words. --read-only-tmpfs=false: podman would otherwise
# mount writable tmpfs on /tmp, /var/tmp and /run, which a Kubernetes read-only root does not have.
LOCKED_DOWN = [
    "--user",
    f"{UID}:{UID}",
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop",
    "all",
    "--security-opt",
    "no-new-privileges",
    "--network",
    "host",
]


def run_once(
    podman: build.Podman, image: str, name: str, *args: str, stdin: bytes = b"", options: tuple[str, ...] = ()
) -> tuple[int, bytes, bytes]:
    """`podman run --rm` of the image in the foreground; (exit code, stdout, stderr)."""
    result = podman.run(
        "run", "--rm", "--interactive", "--name", name, *LOCKED_DOWN, *options, image, *args, input=stdin, check=False
    )
    return result.returncode, result.stdout, result.stderr


def test_image_config_is_non_root_exec_form_with_the_snapshot_path(podman, image):
    config = podman.inspect(image)["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["training-filter"]
    assert config["Cmd"] == ["run"]
    assert "9100/tcp" in config["ExposedPorts"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["TF_OPTOUT_SNAPSHOT_PATH"] == "/var/lib/training-filter/optouts.snapshot"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_inside_uid_10001_read_only_root_compiled_fast_path_no_compiler(podman, image, container_name):
    probe = """
import errno, json, os, shutil
import consumer.wire.fastpath as f
try:
    open("/written-by-the-test", "w")
    root = "writable"
except OSError as exc:
    root = errno.errorcode[exc.errno]
try:
    import consumer.devtools
    devtools = True
except ImportError:
    devtools = False
try:
    import tqdm
    tqdm_present = True
except ImportError:
    tqdm_present = False
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "compiled": f.COMPILED, "module": f.__file__,
                  "root": root, "gcc": shutil.which("gcc"), "cli": shutil.which("training-filter"),
                  "snapshot_dir_owner": os.stat("/var/lib/training-filter").st_uid,
                  "devtools": devtools, "tqdm": tqdm_present}))
"""
    code, out, err = run_once(podman, image, container_name, "-c", probe, options=("--entrypoint", "python"))
    assert code == 0, err.decode()
    facts = orjson.loads(out)
    assert facts["uid"] == UID and facts["gid"] == UID
    assert facts["compiled"] is True, facts["module"]
    assert facts["module"].startswith("/opt/venv/") and facts["module"].endswith(".so")
    assert facts["root"] == "EROFS"
    assert facts["gcc"] is None, "the compiler of the build stage reached the final image"
    assert facts["cli"] == "/opt/venv/bin/training-filter"
    assert facts["snapshot_dir_owner"] == UID
    # The development tools (local broker, generator, demo) and their dependency stay out of the image.
    assert facts["devtools"] is False and facts["tqdm"] is False


def test_help(podman, image, container_name):
    code, out, err = run_once(podman, image, container_name, "--help")
    assert code == 0, err.decode()
    for command in (b"run", b"check", b"produce", b"tail"):
        assert command in out
    code, out, err = run_once(podman, image, container_name, "run", "--help")
    assert code == 0, err.decode()
    assert b"TF_BOOTSTRAP_SERVERS" in out and b"TF_HMAC_KEY_FILE" in out
    code, _, err = run_once(podman, image, container_name, "demo")
    assert code == 2 and b"development tool" in err, err.decode()


def test_run_without_configuration_exits_2_and_names_what_is_missing(podman, image, container_name):
    code, _, err = run_once(podman, image, container_name)  # the image's own command: `training-filter run`
    assert code == 2
    # Every problem at once: the missing bootstrap servers and the missing key.
    assert b"invalid configuration" in err and b"TF_BOOTSTRAP_SERVERS is required" in err
    assert b"no pseudonymisation key" in err
    code, _, err = run_once(podman, image, container_name, options=("--env", "TF_BOOTSTRAP_SERVERS=127.0.0.1:9"))
    assert code == 2
    assert b"TF_HMAC_KEY" in err and b"TF_BOOTSTRAP_SERVERS" not in err


ADULT_POST = {
    "post_id": "p1",
    "author_id": "u1",
    "author_birth_date": "1990-05-01",
    "author_country": "de",
    "visibility": "PUBLIC",
    "kind": "POST",
    "surface": "facebook",
    "language": "de",
    "text": "hallo",
    "created_at": "2026-01-01T10:00:00+01:00",
}


def test_check_decides_json_lines(podman, image, container_name, tmp_path):
    optouts = tmp_path / "optouts.txt"
    optouts.write_text("gone\n")
    optouts.chmod(0o444)
    lines = [
        orjson.dumps(ADULT_POST),
        # The README's example: 18 on 1 March 2026, so still 17 on 28 February.
        orjson.dumps(
            {
                "post_id": "p2",
                "author_id": "u2",
                "author_birth_date": "2008-02-29",
                "author_country": "el",
                "visibility": "PUBLIC",
                "kind": "POST",
                "surface": "facebook",
                "text": "hi",
                "created_at": "2026-02-28T12:00:00Z",
            }
        ),
        orjson.dumps({**ADULT_POST, "post_id": "p3", "visibility": "FRIENDS"}),
        orjson.dumps({**ADULT_POST, "post_id": "p4", "author_country": "US"}),
        orjson.dumps({**ADULT_POST, "post_id": "p5", "author_birth_date": None}),
        orjson.dumps({**ADULT_POST, "post_id": "p6", "author_id": "gone"}),
        orjson.dumps({**ADULT_POST, "post_id": "p7", "created_at": "2026-01-01T10:00:00"}),  # no offset
        b"not json",
        orjson.dumps({**ADULT_POST, "post_id": "p8", "created_at": 1_767_225_600_000}),
    ]
    code, out, err = run_once(
        podman,
        image,
        container_name,
        "check",
        "--source",
        "post",
        "--optouts",
        "/etc/training-filter/optouts.txt",
        stdin=b"\n".join(lines) + b"\n",
        options=("--volume", f"{optouts}:/etc/training-filter/optouts.txt:ro"),
    )
    assert code == 0, err.decode()
    assert [orjson.loads(line) for line in out.splitlines()] == [
        {"id": "p1", "decision": "eligible"},
        {"id": "p2", "decision": "under_age"},
        {"id": "p3", "decision": "not_public"},
        {"id": "p4", "decision": "region"},
        {"id": "p5", "decision": "unknown_age"},
        {"id": "p6", "decision": "opted_out"},
        {"id": "p7", "decision": "malformed"},
        {"id": None, "decision": "malformed"},
        {"id": "p8", "decision": "eligible"},
    ]

    interaction = {
        "interaction_id": "i1",
        "user_id": "u7",
        "user_birth_date": "1980-01-01",
        "user_country": "SE",
        "context": "DIRECT_WITH_AI",
        "surface": "messenger",
        "prompt": "hej",
        "response": "hej hej",
        "created_at": 1_767_225_600_000,
    }
    lines = [orjson.dumps(interaction), orjson.dumps({**interaction, "interaction_id": "i2", "context": "GROUP_CHAT"})]
    code, out, err = run_once(
        podman, image, container_name, "check", "--source", "ai_interaction", stdin=b"\n".join(lines)
    )
    assert code == 0, err.decode()
    assert [orjson.loads(line) for line in out.splitlines()] == [
        {"id": "i1", "decision": "eligible"},
        {"id": "i2", "decision": "not_public"},
    ]


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _metrics(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, body = _get(port, "/metrics")
    assert status == 200
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def _state(podman: build.Podman, name: str) -> dict:
    return podman.inspect(name, kind="container")["State"]


def _logs(podman: build.Podman, name: str) -> list[dict]:
    result = podman.run("logs", name, check=False)
    lines = []
    for raw in (result.stdout + result.stderr).splitlines():
        try:
            lines.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            lines.append({"unparsed": raw.decode(errors="replace")})
    return lines


def _wait_ready(podman: build.Podman, name: str, port: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(podman, name)
        if state["Status"] != "running":
            logs = _logs(podman, name)[-20:]
            raise AssertionError(f"the container is {state['Status']} (exit {state['ExitCode']}): {logs}")
        try:
            if _get(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"/readyz not 200 after {timeout}s: {_logs(podman, name)[-20:]}")


def _key_file(tmp_path: Path) -> Path:
    """The pseudonymisation key as the Secret mounts it: the container user's, read-only."""
    key = tmp_path / "key"
    key.write_bytes(HMAC_KEY + b"\n")
    os.chown(key, UID, UID)
    key.chmod(0o400)
    return key


def _run_locked_down(
    podman: Any, image: str, container_name: str, key: Path, port: int, topics: Topics, bootstrap: str
) -> None:
    """The image's own command (`training-filter run`) as the Deployment runs it: locked down, a
    read-only root, the snapshot folder and /tmp as emptyDirs, the key as a read-only Secret file."""
    env = {
        **topics.env(),
        "TF_BOOTSTRAP_SERVERS": bootstrap,
        "TF_GROUP_ID": f"tf-image-{container_name}",
        "TF_HMAC_KEY_FILE": "/etc/training-filter/hmac/key",
        "TF_METRICS_HOST": "127.0.0.1",
        "TF_METRICS_PORT": str(port),
        "TF_OPTOUT_CAPACITY": "100000",
        "TF_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "TF_LOG_LEVEL": "debug",
    }
    options = [
        "--detach",
        "--name",
        container_name,
        *LOCKED_DOWN,
        # The Deployment's emptyDirs: the snapshot folder and /tmp; the key as a read-only Secret file.
        "--tmpfs",
        "/var/lib/training-filter:rw,size=64m,U",  # U: owned by the container user, like fsGroup
        "--tmpfs",
        "/tmp:rw,size=64m,mode=1777",
        "--volume",
        f"{key}:/etc/training-filter/hmac/key:ro",
    ]
    for name, value in env.items():
        options += ["--env", f"{name}={value}"]
    podman.run("run", *options, image)  # the image's own command: `training-filter run`


def test_run_against_the_local_kafka_end_to_end_then_sigterm_exits_0(podman, image, container_name, kafka, tmp_path):
    topics = Topics.unique(kafka.bootstrap)
    generator = StreamGenerator(seed=31, users_per_pool=5, posts_topic=topics.posts, ai_topic=topics.ai)
    eligible = generator.record("eligible", "post")
    opted_out = generator.record("opted_out", "post")
    malformed = generator.record("malformed", "post")
    opted_user = opted_out.user_id or ""
    optout = next((k, v) for k, v in generator.optouts() if k == opted_user.encode())  # the user's own opt-out

    port = free_port()
    _run_locked_down(podman, image, container_name, _key_file(tmp_path), port, topics, kafka.bootstrap)

    produce(kafka.bootstrap, [(topics.optouts, *optout)])
    _wait_ready(podman, container_name, port)
    produce(kafka.bootstrap, [(g.topic, g.key, g.value) for g in (eligible, opted_out, malformed)])

    deadline = time.monotonic() + 60
    training: list = []
    while time.monotonic() < deadline:
        done = sum(v for _, v in _metrics(port).get("training_filter_records_total", []))
        if done >= 3:
            training = read_all(kafka.bootstrap, topics.training)
            if training:
                break
        time.sleep(0.3)
    assert len(training) == 1, f"training topic: {len(training)} records; {_logs(podman, container_name)[-20:]}"
    record = CODEC.decode(training[0].value(), TRAINING_RECORD)[1]
    assert record["record_id"] == eligible.record_id
    assert record["source"] == "POST"
    assert record["author_pseudonym"] == pseudonym(eligible.user_id or "")
    assert training[0].key() == record["author_pseudonym"].encode()
    assert record["source_topic"] == topics.posts
    assert eligible.user_id is not None and eligible.user_id.encode() not in training[0].value()

    dead = read_all(kafka.bootstrap, topics.dlq)
    assert [m.value() for m in dead] == [malformed.value]
    revocations = [CODEC.decode(m.value(), REVOCATION)[1] for m in read_all(kafka.bootstrap, topics.revocations)]
    assert [r["author_pseudonym"] for r in revocations] == [pseudonym(opted_user)]

    metrics = _metrics(port)
    decided = {lbl["decision"]: v for lbl, v in metrics["training_filter_records_total"] if v}
    assert decided == {"eligible": 1, "opted_out": 1, "malformed": 1}
    ((info, _),) = metrics["training_filter_build_info"]
    assert info["fast_path"] == "compiled"
    assert _get(port, "/healthz")[0] == 200
    assert _get(port, "/readyz")[0] == 200

    started = time.monotonic()
    podman.run("stop", "--time", "30", container_name, timeout=60)  # SIGTERM, SIGKILL only after 30 s
    took = time.monotonic() - started
    state = _state(podman, container_name)
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 0, _logs(podman, container_name)[-20:]
    assert took < GRACE_SECONDS, f"SIGTERM to exit took {took:.1f}s, above the {GRACE_SECONDS}s grace"
    events = [line.get("event") for line in _logs(podman, container_name)]
    assert "stopping" in events and "stopped" in events
    assert "optout_snapshot_saved" in events  # written to the tmpfs: the read-only root is not needed
