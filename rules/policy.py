"""The versioned policy file: which regions, what minimum age, which sources."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rules.countries import normalise_country


class PolicyError(ValueError):
    """The policy file is missing, unreadable or invalid. The message says what to fix."""


@dataclass(frozen=True, slots=True)
class Policy:
    version: str
    regions: frozenset[str]
    minimum_age: int
    maximum_plausible_age: int
    include_posts: bool
    include_ai_interactions: bool
    # "opt_out" (the default): eligible unless the user objected. "opt_in": eligible only if the user's
    # consent is present and not withdrawn, and an opt-out still wins over a consent.
    consent_model: str = "opt_out"


CONSENT_MODELS = ("opt_out", "opt_in")


def default_policy_path() -> Path:
    return Path(__file__).with_name("policy.toml")


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and validate a policy file; the packaged default when `path` is None.

    Reading the file is the caller's I/O at start-up; everything after that is pure.
    """
    where = Path(path) if path is not None else default_policy_path()
    try:
        text = where.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {where}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy file {where} is not UTF-8 text (byte {exc.start}): give a TOML file") from exc
    return parse_policy(text, origin=str(where))


def parse_policy(text: str, origin: str = "<policy>") -> Policy:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{origin}: not valid TOML: {exc}") from exc

    def need(key: str, kind: type, where: dict[str, Any] = doc, prefix: str = "") -> Any:
        if key not in where:
            raise PolicyError(f"{origin}: missing required key '{prefix}{key}'")
        value = where[key]
        # bool is an int subclass; a policy that says `minimum_age = true` is a mistake.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise PolicyError(f"{origin}: '{prefix}{key}' must be a {kind.__name__}, got {value!r}")
        return value

    version = need("version", str).strip()
    if not version:
        raise PolicyError(f"{origin}: 'version' must not be empty")

    raw_regions = need("regions", list)
    regions: set[str] = set()
    for item in raw_regions:
        code = normalise_country(item) if isinstance(item, str) else None
        if code is None or len(code) != 2 or not code.isalpha() or not code.isascii():
            raise PolicyError(f"{origin}: region {item!r} is not an ISO 3166-1 alpha-2 code")
        regions.add(code)
    if not regions:
        raise PolicyError(f"{origin}: 'regions' must list at least one country")

    minimum_age = need("minimum_age", int)
    maximum_age = need("maximum_plausible_age", int)
    if not 0 <= minimum_age <= maximum_age:
        raise PolicyError(
            f"{origin}: need 0 <= minimum_age <= maximum_plausible_age, got {minimum_age} and {maximum_age}"
        )
    if maximum_age > 150:
        raise PolicyError(f"{origin}: maximum_plausible_age {maximum_age} is not plausible (at most 150)")

    sources = need("sources", dict)
    include_posts = need("post", bool, sources, "sources.")
    include_ai = need("ai_interaction", bool, sources, "sources.")
    unknown = set(sources) - {"post", "ai_interaction"}
    if unknown:
        raise PolicyError(f"{origin}: unknown source(s) {sorted(unknown)} in [sources]")
    consent_model = doc.get("consent_model", "opt_out")  # absent: opt-out, as before the setting existed
    if consent_model not in CONSENT_MODELS:
        allowed = " or ".join(f'"{m}"' for m in CONSENT_MODELS)
        raise PolicyError(f"{origin}: 'consent_model' must be {allowed}, got {consent_model!r}")
    unknown_top = set(doc) - {"version", "regions", "minimum_age", "maximum_plausible_age", "sources", "consent_model"}
    if unknown_top:
        raise PolicyError(f"{origin}: unknown key(s) {sorted(unknown_top)}")

    return Policy(
        version=version,
        regions=frozenset(regions),
        minimum_age=minimum_age,
        maximum_plausible_age=maximum_age,
        include_posts=include_posts,
        include_ai_interactions=include_ai,
        consent_model=consent_model,
    )
