"""A realistic synthetic stream with known decisions, for the demo, the tests and the benchmark.

Each record is built to have one target decision: its user comes from a pool with fixed attributes
(adult in the EU/EEA, minor, outside the region, unknown age, opted out) and its visibility or
context is chosen to match. Nothing here is real personal data.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass

from consumer.wire.codec import AI_INTERACTION, OPTOUT, POST, Codec

EU_EEA = [
    "AT",
    "BE",
    "BG",
    "HR",
    "CY",
    "CZ",
    "DK",
    "EE",
    "FI",
    "FR",
    "DE",
    "EL",
    "GR",
    "HU",
    "IE",
    "IT",
    "LV",
    "LT",
    "LU",
    "MT",
    "NL",
    "PL",
    "PT",
    "RO",
    "SK",
    "SI",
    "ES",
    "SE",
    "IS",
    "LI",
    "NO",
]
OUTSIDE = ["US", "GB", "UK", "CH", "BR", "IN", "JP", "TR", "CA", "AU"]
SURFACES = ["facebook", "instagram", "threads", "whatsapp", "messenger"]
LANGUAGES = ["de", "fr", "es", "it", "pl", "nl", "sv", "en", "el", None]
WORDS = tuple(
    " ".join(
        [
            "the a and to of in is that it for on with as was at by this be from or have an they which one you were",
            "her all she there would their we him been has when who will more no if out so said what up its about",
            "into than them can only other new some could time these two may then do first any my now such like our",
            "over man me even most made after also did many before must through back years where much your way well",
            "down should because each just those people how too little state good very make world still own see men",
            "work long get here between both life being under never day same another know while",
            "café naïve über Straße coração żółw ελληνικά 🙂 🚲",
        ]
    ).split()
)

# Target mix: about half eligible, the rest spread over every reason.
DEFAULT_MIX = {
    "eligible": 0.50,
    "not_public": 0.15,
    "region": 0.09,
    "unknown_age": 0.07,
    "under_age": 0.08,
    "opted_out": 0.08,
    "malformed": 0.03,
}
NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class User:
    user_id: str
    birth_day: int | None  # days since 1970-01-01
    country: str


@dataclass(frozen=True)
class Generated:
    topic: str
    key: bytes | None
    value: bytes
    record_id: str | None
    user_id: str | None
    expected: str  # the decision the record was built for
    source: str  # "post" or "ai_interaction"


def _day(date: dt.date) -> int:
    return (date - dt.date(1970, 1, 1)).days


class StreamGenerator:
    def __init__(
        self,
        seed: int = 7,
        users_per_pool: int = 2000,
        posts_topic: str = "posts.v1",
        ai_topic: str = "ai-interactions.v1",
        mix: dict[str, float] | None = None,
        text_bytes: tuple[int, int] = (200, 1000),
        ai_share: float = 0.3,
    ) -> None:
        self.random = random.Random(seed)
        self.codec = Codec()
        self.posts_topic = posts_topic
        self.ai_topic = ai_topic
        self.mix = mix or DEFAULT_MIX
        self.text_bytes = text_bytes
        self.ai_share = ai_share
        self.serial = 0
        r = self.random
        created_floor = NOW - dt.timedelta(days=60)

        def born(min_age: int, max_age: int) -> int:
            # Ages are whole years on every day of the 60-day created_at window.
            years = r.randint(min_age, max_age)
            return _day(created_floor.date()) - years * 366 - r.randint(0, 300)

        self.pools: dict[str, list[User]] = {
            "adult": [User(f"u-a-{seed}-{i}", born(19, 80), r.choice(EU_EEA)) for i in range(users_per_pool)],
            "minor": [User(f"u-m-{seed}-{i}", born(13, 16), r.choice(EU_EEA)) for i in range(users_per_pool)],
            "outside": [User(f"u-o-{seed}-{i}", born(19, 80), r.choice(OUTSIDE)) for i in range(users_per_pool)],
            "unknown": [
                User(f"u-u-{seed}-{i}", None if i % 3 else born(122, 130), r.choice(EU_EEA))
                for i in range(users_per_pool)
            ],
            "opted": [User(f"u-x-{seed}-{i}", born(19, 80), r.choice(EU_EEA)) for i in range(users_per_pool)],
        }

    def optouts(self) -> list[tuple[bytes, bytes]]:
        """(key, value) of an OptOut for every user of the opted-out pool."""
        at = int((NOW - dt.timedelta(days=90)).timestamp() * 1000)
        return [
            (
                u.user_id.encode(),
                self.codec.encode(OPTOUT, {"user_id": u.user_id, "opted_out_at": at, "source": "objection_form"}),
            )
            for u in self.pools["opted"]
        ]

    def _text(self) -> str:
        low, high = self.text_bytes
        target = self.random.randint(low, high)
        words: list[str] = []
        size = 0
        while size < target:
            word = self.random.choice(WORDS)
            words.append(word)
            size += len(word.encode()) + 1
        return " ".join(words)

    def _country(self, user: User) -> str:
        style = self.random.random()
        if style < 0.1:
            return user.country.lower()
        if style < 0.15:
            return f" {user.country} "
        return user.country

    def record(self, expected: str, source: str | None = None) -> Generated:
        r = self.random
        self.serial += 1
        source = source or ("ai_interaction" if r.random() < self.ai_share else "post")
        if expected == "malformed":
            return self._corrupt(source)
        pool = {
            "eligible": "adult",
            "not_public": "adult",
            "region": "outside",
            "unknown_age": "unknown",
            "under_age": "minor",
            "opted_out": "opted",
        }[expected]
        user = r.choice(self.pools[pool])
        created = NOW - dt.timedelta(seconds=r.randint(0, 59 * 86400))
        created_ms = int(created.timestamp() * 1000)
        birth = user.birth_day
        if expected == "unknown_age" and birth is None and r.random() < 0.2:
            birth = _day(created.date()) + r.randint(1, 400)  # born after the post: implausible
        public = expected != "not_public"
        language = r.choice(LANGUAGES)
        if source == "post":
            record_id = f"p-{self.serial:010d}"  # fixed width: benchmarks patch ids in place
            value = self.codec.encode(
                POST,
                {
                    "post_id": record_id,
                    "author_id": user.user_id,
                    "author_birth_date": birth,
                    "author_country": self._country(user),
                    "visibility": "PUBLIC"
                    if public
                    else r.choice(["FRIENDS", "FRIENDS_OF_FRIENDS", "CUSTOM", "ONLY_ME"]),
                    "kind": r.choice(["POST", "COMMENT", "CAPTION"]),
                    "surface": r.choice(SURFACES),
                    "language": language,
                    "text": self._text(),
                    "created_at": created_ms,
                },
            )
            topic = self.posts_topic
        else:
            record_id = f"i-{self.serial:010d}"
            value = self.codec.encode(
                AI_INTERACTION,
                {
                    "interaction_id": record_id,
                    "user_id": user.user_id,
                    "user_birth_date": birth,
                    "user_country": self._country(user),
                    "context": "DIRECT_WITH_AI" if public else "GROUP_CHAT",
                    "surface": r.choice(SURFACES),
                    "language": language,
                    "prompt": self._text()[:300],
                    "response": self._text(),
                    "created_at": created_ms,
                },
            )
            topic = self.ai_topic
        return Generated(topic, user.user_id.encode(), value, record_id, user.user_id, expected, source)

    def _corrupt(self, source: str) -> Generated:
        r = self.random
        good = self.record("eligible", source)
        kind = r.randrange(4)
        if kind == 0:
            value = b"\x01" + good.value[1:]  # wrong magic byte
        elif kind == 1:
            value = good.value[: r.randint(6, len(good.value) - 2)]  # truncated body
        elif kind == 2:
            value = b"\x00\x00\x00\x03\xe7" + good.value[5:]  # unknown schema id 999
        else:
            value = b'{"this": "is json, not avro"}'
        return Generated(good.topic, good.key, value, None, good.user_id, "malformed", source)

    def stream(self, count: int) -> Iterator[Generated]:
        reasons = list(self.mix)
        weights = [self.mix[k] for k in reasons]
        for _ in range(count):
            yield self.record(self.random.choices(reasons, weights)[0])
