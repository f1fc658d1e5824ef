"""The settings that are read from files or checked against a policy: the pseudonymisation and audit keys, the
active and the shadow policy, the consent topic (which the policies require or forbid), and the
schema registry's secrets and certificates. Each appends its problems (one line each, naming the
variable) instead of raising, so that every problem is reported in one go."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from consumer.wire.registry import RegistrySettings
from rules import Policy, PolicyError, default_policy_path, load_policy

PREFIX = "TF_"
MIN_HMAC_KEY_BYTES = 32

# The registry settings that mean nothing without TF_SCHEMA_REGISTRY_URL.
_REGISTRY_ONLY = (
    "USER",
    "PASSWORD_FILE",
    "PASSWORD",
    "CA_LOCATION",
    "CERT_LOCATION",
    "KEY_LOCATION",
    "AUTO_REGISTER",
    "SUBJECT_STRATEGY",
    "OUTPUT_VERSION",
    "TIMEOUT_SECONDS",
)


def hmac_key(path: str, inline: str, problems: list[str]) -> bytes:
    if path and inline:
        problems.append(f"set only one of {PREFIX}HMAC_KEY_FILE and {PREFIX}HMAC_KEY")
        return b""
    if path:
        try:
            key = Path(path).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            problems.append(f"{PREFIX}HMAC_KEY_FILE={path}: cannot read it ({exc.strerror or exc})")
            return b""
        where = f"{PREFIX}HMAC_KEY_FILE={path}"
    elif inline:
        key = inline.encode("utf-8")
        where = f"{PREFIX}HMAC_KEY"
    else:
        problems.append(
            f"no pseudonymisation key: set {PREFIX}HMAC_KEY_FILE to a file holding at least {MIN_HMAC_KEY_BYTES} "
            f"random bytes (e.g. a Kubernetes Secret: `head -c 32 /dev/urandom | base64`)"
        )
        return b""
    if len(key) < MIN_HMAC_KEY_BYTES:
        problems.append(f"{where}: the key is {len(key)} bytes; it must be at least {MIN_HMAC_KEY_BYTES}")
    return key


def audit_key(path: str, inline: str, pseudonym_key: bytes, problems: list[str]) -> bytes | None:
    """The key that signs receipts (docs/audit.md), or None: no receipts. Never the pseudonymisation
    key: whoever checks receipts must not be able to compute pseudonyms."""
    if not path and not inline:
        return None
    if path and inline:
        problems.append(f"set only one of {PREFIX}AUDIT_KEY_FILE and {PREFIX}AUDIT_KEY")
        return None
    where = f"{PREFIX}AUDIT_KEY_FILE={path}" if path else f"{PREFIX}AUDIT_KEY"
    try:
        key = Path(path).read_bytes().rstrip(b"\r\n") if path else inline.encode("utf-8")
    except OSError as exc:
        problems.append(f"{where}: cannot read it ({exc.strerror or exc})")
        return None
    if len(key) < MIN_HMAC_KEY_BYTES:
        problems.append(f"{where}: the key is {len(key)} bytes; it must be at least {MIN_HMAC_KEY_BYTES}")
    elif key == pseudonym_key:
        problems.append(f"{where}: the audit key is the pseudonymisation key; give the audit a key of its own")
    return key


def file_sha256(path: str | None) -> str:
    """SHA-256 (hex) of a policy file's bytes (the packaged one when None), as receipts name it;
    empty when it cannot be read (the policy check has said why)."""
    try:
        return hashlib.sha256(Path(path or default_policy_path()).read_bytes()).hexdigest()
    except OSError:
        return ""


def policy(path: str | None, problems: list[str]) -> Policy | None:
    try:
        return load_policy(path)
    except PolicyError as exc:
        problems.append(f"{PREFIX}POLICY_FILE: {exc}")
    except UnicodeDecodeError:  # rules.load_policy reads the file as UTF-8 text
        problems.append(f"{PREFIX}POLICY_FILE={path}: not a UTF-8 text file; point it at the policy TOML")
    return None


def shadow_policy(path: str, active: Policy | None, problems: list[str]) -> Policy | None:
    """The candidate policy of TF_SHADOW_POLICY_FILE, validated like the active one (None: no shadow)."""
    if not path:
        return None
    try:
        shadow = load_policy(path)
    except PolicyError as exc:
        problems.append(f"{PREFIX}SHADOW_POLICY_FILE: {exc}")
        return None
    except UnicodeDecodeError:
        problems.append(f"{PREFIX}SHADOW_POLICY_FILE={path}: not a UTF-8 text file; point it at the candidate TOML")
        return None
    if active is not None and shadow.version == active.version and shadow != active:
        problems.append(
            f"{PREFIX}SHADOW_POLICY_FILE={path}: its version {shadow.version!r} is the active policy's, but its "
            "rules differ: give the candidate its own version (the metrics name it)"
        )
    return shadow


def consent_topic(
    values: dict[str, Any],
    env: Mapping[str, str],
    active: Policy | None,
    policy_path: str | None,
    shadow: Policy | None,
    problems: list[str],
) -> str | None:
    """The consent topic (None unless the active or the shadow policy is opt-in), checked against the
    policies; the consent snapshot path may only be set with it."""
    topic = values.pop("consent_topic", "") or None
    raw_topic = env.get(f"{PREFIX}CONSENT_TOPIC", "").strip()
    raw_snapshot = env.get(f"{PREFIX}CONSENT_SNAPSHOT_PATH", "").strip()
    where = policy_path or "the packaged rules/policy.toml"
    shadow_opt_in = shadow is not None and shadow.consent_model == "opt_in"
    if active is not None and active.consent_model == "opt_in" and not raw_topic:
        problems.append(
            f'{PREFIX}CONSENT_TOPIC is required: the policy ({where}) says consent_model = "opt_in"; set it to '
            "the compacted topic of Consent records, e.g. privacy.consents.v1"
        )
    elif shadow_opt_in and not raw_topic:
        problems.append(
            f"{PREFIX}CONSENT_TOPIC is required: the shadow policy ({PREFIX}SHADOW_POLICY_FILE) says consent_model = "
            '"opt_in", and without the consents it would count every record as no_consent; set it to the '
            "compacted topic of Consent records, e.g. privacy.consents.v1 (read, but not gating input)"
        )
    if active is not None and active.consent_model == "opt_out" and not shadow_opt_in and (raw_topic or raw_snapshot):
        problems.append(
            f"{PREFIX}CONSENT_TOPIC/{PREFIX}CONSENT_SNAPSHOT_PATH are set but the policy ({where}) has consent_model "
            '= "opt_out" (or none), and so has the shadow policy if any: set consent_model = "opt_in" in the '
            "policy, or unset them"
        )
    return topic


def registry(values: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> RegistrySettings | None:
    """The registry's settings (None without a URL); its secrets and files checked like the HMAC key's."""
    user = values.pop("schema_registry_user", "").strip()
    password_file = values.pop("schema_registry_password_file", "")
    inline = values.pop("schema_registry_password", "")
    files = {
        "CA_LOCATION": values.pop("schema_registry_ca_location", ""),
        "CERT_LOCATION": values.pop("schema_registry_cert_location", ""),
        "KEY_LOCATION": values.pop("schema_registry_key_location", ""),
    }
    if "schema_registry_url" not in values:  # not a URL: that problem is reported already
        return None
    url = values["schema_registry_url"]
    if not url:
        _registry_settings_without_url(env, problems)
        return None
    password = _registry_password(password_file, inline, problems)
    if bool(user) != bool(password) and not (password_file and not password):
        problems.append(
            f"{PREFIX}SCHEMA_REGISTRY_USER and a password ({PREFIX}SCHEMA_REGISTRY_PASSWORD_FILE) go together: "
            "set both or neither"
        )
    for name, path in files.items():
        if path and not Path(path).is_file():
            problems.append(f"{PREFIX}SCHEMA_REGISTRY_{name}={path}: no such file")
    if bool(files["CERT_LOCATION"]) != bool(files["KEY_LOCATION"]):
        problems.append(f"{PREFIX}SCHEMA_REGISTRY_CERT_LOCATION and _KEY_LOCATION go together: set both or neither")
    auto_register = values.get("schema_registry_auto_register", True)
    version = values.get("schema_registry_output_version", "latest")
    if auto_register and version != "latest":
        problems.append(
            f"{PREFIX}SCHEMA_REGISTRY_OUTPUT_VERSION={version} is used only with "
            f"{PREFIX}SCHEMA_REGISTRY_AUTO_REGISTER=false (auto-registration registers the service's own schema): "
            "set that, or unset the version"
        )
    return RegistrySettings(
        url=url,
        user=user,
        password=password,
        ca_location=files["CA_LOCATION"],
        certificate_location=files["CERT_LOCATION"],
        key_location=files["KEY_LOCATION"],
        auto_register=auto_register,
        subject_strategy=values.get("schema_registry_subject_strategy", "topic"),
        output_version=version,
        timeout_seconds=values.get("schema_registry_timeout_seconds", 10.0),
        retry_seconds=values.get("schema_registry_retry_seconds", 60.0),
        lookups_per_batch=values.get("schema_registry_lookups_per_batch", 20),
    )


def _registry_password(password_file: str, inline: str, problems: list[str]) -> str:
    if password_file and inline:
        problems.append(f"set only one of {PREFIX}SCHEMA_REGISTRY_PASSWORD_FILE and {PREFIX}SCHEMA_REGISTRY_PASSWORD")
        return ""
    if password_file:
        try:
            return Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            problems.append(f"{PREFIX}SCHEMA_REGISTRY_PASSWORD_FILE={password_file}: cannot read it ({reason})")
            return ""
    return inline


def _registry_settings_without_url(env: Mapping[str, str], problems: list[str]) -> None:
    for name in _REGISTRY_ONLY:
        var = f"{PREFIX}SCHEMA_REGISTRY_{name}"
        if env.get(var, "").strip():
            problems.append(
                f"{var} is set but {PREFIX}SCHEMA_REGISTRY_URL is not: without a registry it is not used; "
                f"set {PREFIX}SCHEMA_REGISTRY_URL or unset {var}"
            )
