"""Country code normalisation."""

from __future__ import annotations

# The EU writes Greece as EL and the UK is often written UK; ISO 3166-1 says GR and GB.
_ALIASES = {"EL": "GR", "UK": "GB"}


def normalise_country(raw: str) -> str:
    """Strip and upper-case an ISO 3166-1 alpha-2 code, mapping EL to GR and UK to GB.

    Non-ASCII input is returned stripped but otherwise unchanged, so that look-alikes such as a
    dotless i (which upper-cases to I) can never turn into a code on the allow-list: fail closed.
    """
    code = raw.strip()
    if not code.isascii():
        return code
    code = code.upper()
    return _ALIASES.get(code, code)
