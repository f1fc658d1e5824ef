"""The hot loop's Avro path for the v1 input schemas: decode only spans, re-use bytes for the output.

fastavro decodes every field into Python objects (6-9 µs a post here). The rules need five fields,
and the output re-uses most of the input's bytes unchanged: an Avro string is its length varint
followed by UTF-8 and a long is a zig-zag varint, so record id, content, language and created_at are
copied as byte slices from the input body into the TrainingRecord body.

This file is plain Python. At install time Cython compiles it with the C types declared in
`fastpath.pxd` (about 6x faster); where no compiler is available the same code runs interpreted.
`COMPILED` tells which.

The contract with the reference path (the strict encoding check, then fastavro: `Codec.decode`):
`decode_*` returns exactly when the reference path accepts the bytes and they are the canonical
encoding of what they hold, and then its values equal the reference path's. Anything else raises
`FastPathMiss`, and the caller falls back to the reference path, which gives the exact answer or
the exact error. So every byte string the reference path rejects, the fast path rejects too.

Canonical means every varint minimal (a last 7-bit group of zeros is a longer spelling of the same
number); in the v1 schemas that is the only freedom an encoder has. Avro readers accept non-minimal
varints (so does the reference path, within 5 bytes for an int and 10 for a long), and Avro writers
never produce them. The fast path misses on them because it copies lengths and created_at
byte for byte into the output: a padded varint would make the output's bytes depend on which path
decoded the input. With it, the hot loop emits the same bytes on either path. The cost is one
comparison a multi-byte varint.

tests/unit/test_fastpath.py checks all of this differentially, for this file compiled and
interpreted: on valid records, on every corner of every field (over-long and non-minimal varints,
10-byte longs, lengths negative or past the end, indexes out of range, invalid UTF-8, truncation at
each byte), on random and mutated bytes, and on the TrainingRecord the hot loop emits.
"""

from __future__ import annotations

# Compiled, this module is a shared library: no `import cython` here, so that the file also runs
# where Cython is not installed.
COMPILED: bool = not __file__.endswith(".py")

# The reference codec turns dates and timestamps into datetime objects, which exist for years 1 to
# 9999 only; values outside are undecodable there, so they must not decode here either.
_MIN_DAY = -719_162  # 0001-01-01
_MAX_DAY = 2_932_896  # 9999-12-31
_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class FastPathMiss(Exception):
    """The bytes are not a plain, valid v1 body; decode them with the reference codec instead."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A minimal zig-zag varint of at most 10 bytes (an Avro long) at `pos`: (value, next position)."""
    raw = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise FastPathMiss("varint outside the long range")
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    if byte == 0 and shift:
        raise FastPathMiss("non-minimal varint")  # see the module docstring: outputs stay canonical
    value = (raw >> 1) ^ -(raw & 1)  # a signed 64-bit result when compiled
    return value, pos


def _string_end(buf: bytes, pos: int, n: int) -> int:
    """Check the Avro string at `pos` (length and UTF-8) and return the position after it."""
    byte = buf[pos]
    if byte < 0x80:
        size = (byte >> 1) ^ -(byte & 1)
        pos += 1
    else:
        size, pos = _varint(buf, pos)
    if size < 0 or size > n - pos:
        raise FastPathMiss("string length outside the value")
    end = pos + size
    _check_utf8(buf, pos, end)  # fastavro rejects invalid UTF-8; so must we
    return end


def _check_utf8(buf: bytes, start: int, end: int) -> int:
    """FastPathMiss unless buf[start:end] is well-formed UTF-8 (Unicode table 3-7), which is exactly
    what Python's strict decoder accepts. Compiled, a byte loop over the bytes' buffer (the caller
    has checked that end <= len(buf)): decoding would build a str only to throw it away (for text
    with emoji, a 4-byte-per-character one)."""
    if not COMPILED:
        try:
            buf[start:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FastPathMiss("invalid UTF-8") from exc
        return 0
    data = _bytes_data(buf)  # type: ignore[name-defined]  # noqa: F821 - in fastpath.pxd; compiled only
    i = start
    while i < end:
        lead = data[i]
        if lead < 0x80:
            i += 1
            continue
        if 0xC2 <= lead <= 0xDF:
            need, low, high = 1, 0x80, 0xBF
        elif 0xE0 <= lead <= 0xEF:
            need = 2
            low = 0xA0 if lead == 0xE0 else 0x80
            high = 0x9F if lead == 0xED else 0xBF  # ED A0..BF would be a surrogate
        elif 0xF0 <= lead <= 0xF4:
            need = 3
            low = 0x90 if lead == 0xF0 else 0x80
            high = 0x8F if lead == 0xF4 else 0xBF  # nothing above U+10FFFF
        else:
            raise FastPathMiss("invalid UTF-8")
        if end - i <= need:
            raise FastPathMiss("truncated UTF-8")
        second = data[i + 1]
        if second < low or second > high:
            raise FastPathMiss("invalid UTF-8")
        for k in range(2, need + 1):
            if data[i + k] & 0xC0 != 0x80:
                raise FastPathMiss("invalid UTF-8")
        i += need + 1
    return 0


def _decode(buf: bytes, first_enum: int, second_enum: int, strings: int) -> tuple:
    """(id_end, user_id, birth_day, country, public, language_start, language_end, content_end,
    created_ms, split).

    Positions index the framed value: the record id is buf[5:id_end] with its length prefix; the
    language union is buf[language_start:language_end]; the content (one string, or prompt and
    response) is buf[language_end:content_end], the first string ending at `split` (= content_end
    for a post); created_at's varint is buf[content_end:]. `user_id` and `country` are raw UTF-8 bytes.
    """
    n = len(buf)
    try:
        pos = _string_end(buf, 5, n)
        id_end = pos
        start = pos
        pos = _string_end(buf, pos, n)
        user_id = buf[start + 1 if buf[start] < 0x80 else _varint(buf, start)[1] : pos]
        branch = buf[pos]
        pos += 1
        if branch == 0:
            birth_day = None
        elif branch == 2:
            start = pos
            birth_day, pos = _varint(buf, pos)
            if pos - start > 5:  # an Avro int has at most 5 bytes (the reference path's bound)
                raise FastPathMiss("int longer than 5 bytes")
            if not _MIN_DAY <= birth_day <= _MAX_DAY:
                raise FastPathMiss("date outside years 1 to 9999")
        else:
            raise FastPathMiss("bad union branch")
        start = pos
        pos = _string_end(buf, pos, n)
        country = buf[start + 1 if buf[start] < 0x80 else _varint(buf, start)[1] : pos]
        symbol = buf[pos]
        pos += 1
        if symbol & 1 or symbol >= 2 * first_enum:
            raise FastPathMiss("enum symbol out of range")
        public = symbol == 0  # PUBLIC and DIRECT_WITH_AI are each their enum's first symbol
        if second_enum:
            symbol = buf[pos]
            pos += 1
            if symbol & 1 or symbol >= 2 * second_enum:
                raise FastPathMiss("enum symbol out of range")
        pos = _string_end(buf, pos, n)  # surface
        language_start = pos
        branch = buf[pos]
        pos += 1
        if branch == 2:
            pos = _string_end(buf, pos, n)
        elif branch != 0:
            raise FastPathMiss("bad union branch")
        language_end = pos
        pos = _string_end(buf, pos, n)
        split = pos
        if strings == 2:
            pos = _string_end(buf, pos, n)
        content_end = pos
        created_ms, pos = _varint(buf, pos)
        if not _MIN_MS <= created_ms <= _MAX_MS:
            raise FastPathMiss("timestamp outside years 1 to 9999")
    except (IndexError, UnicodeDecodeError) as exc:
        raise FastPathMiss(type(exc).__name__) from exc
    if pos != n:
        raise FastPathMiss("trailing bytes")
    return (id_end, user_id, birth_day, country, public, language_start, language_end, content_end, created_ms, split)


def decode_post(buf: bytes) -> tuple:
    """Post v1: visibility has 5 symbols and kind 3; one content string (text)."""
    return _decode(buf, 5, 3, 1)


def decode_ai_interaction(buf: bytes) -> tuple:
    """AiInteraction v1: context has 2 symbols; two content strings (prompt, response)."""
    return _decode(buf, 2, 0, 2)


# -- output ------------------------------------------------------------------------------------------


def zigzag_varint(value: int) -> bytes:
    """The Avro encoding of an int or long."""
    raw = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def avro_string(text: str | bytes) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return zigzag_varint(len(data)) + data


_PSEUDONYM_LENGTH = b"\x80\x01"  # 64, the length of the hex pseudonym
# TrainingRecord v2: source (a string), then text, prompt and response, each a [null, string] union
# (branch 0 is null: 0x00; branch 1 is a string: 0x02).
_POST_SOURCE_TEXT = b"\x08POST\x02"  # source "POST" (length 4: 0x08), text present...
_POST_NO_EXCHANGE = b"\x00\x00"  # ...prompt and response null
_AI_SOURCE_NO_TEXT_PROMPT = b"\x1cAI_INTERACTION\x00\x02"  # "AI_INTERACTION" (14: 0x1c), text null, prompt present...
_PRESENT = b"\x02"  # ...response present


def training_record(
    header: bytes,
    buf: bytes,
    id_end: int,
    language_start: int,
    language_end: int,
    split: int,
    content_end: int,
    country: bytes,
    pseudonym: bytes,
    provenance: bytes,
    offset: int,
) -> bytes:
    """A framed TrainingRecord (v2) built from input spans.

    `split` is where the first content string ends: content_end for a post (one string, the text),
    the end of the prompt for an AI interaction. `country` is the encoded normalised country;
    `provenance` the encoded policy_version, source_topic and source_partition (constant per
    partition). Field order: record_id, source, text, prompt, response, language, country,
    created_at, author_pseudonym, policy_version, source_topic, source_partition, source_offset.
    """
    if split == content_end:
        return b"".join(
            (
                header,
                buf[5:id_end],
                _POST_SOURCE_TEXT,
                buf[language_end:content_end],
                _POST_NO_EXCHANGE,
                buf[language_start:language_end],
                country,
                buf[content_end:],
                _PSEUDONYM_LENGTH,
                pseudonym,
                provenance,
                zigzag_varint(offset),
            )
        )
    return b"".join(
        (
            header,
            buf[5:id_end],
            _AI_SOURCE_NO_TEXT_PROMPT,
            buf[language_end:split],
            _PRESENT,
            buf[split:content_end],
            buf[language_start:language_end],
            country,
            buf[content_end:],
            _PSEUDONYM_LENGTH,
            pseudonym,
            provenance,
            zigzag_varint(offset),
        )
    )


def training_record_of(
    header: bytes, buf: bytes, fields: tuple, country: bytes, pseudonym: bytes, provenance: bytes, offset: int
) -> bytes:
    """`training_record` with the spans of a `decode_*` result (`fields`): one call in the hot loop."""
    return training_record(
        header, buf, fields[0], fields[5], fields[6], fields[9], fields[7], country, pseudonym, provenance, offset
    )
