"""Country code normalisation."""

from __future__ import annotations

# The EU writes Greece as EL and the UK is often written UK; ISO 3166-1 says GR and GB.
_ALIASES = {"EL": "GR", "UK": "GB"}
# ASCII white space only: str.strip() would also remove a no-break or ideographic space, turning
# "\u00a0DE" into DE although the input is not a plain ASCII code.
_ASCII_SPACE = " \t\n\r\x0b\x0c"


def normalise_country(raw: str) -> str:
    """Strip ASCII white space and upper-case an ISO 3166-1 alpha-2 code, mapping EL to GR and UK to GB.

    Anything that is not plain ASCII is returned unchanged, so that look-alikes such as a dotless i
    (which upper-cases to I) or a code padded with a non-ASCII space can never turn into a code on
    the allow-list: fail closed.
    """
    if not raw.isascii():
        return raw
    code = raw.strip(_ASCII_SPACE).upper()
    return _ALIASES.get(code, code)
