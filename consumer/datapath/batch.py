"""The hot loop: one consumed batch in, training records and dead letters out.

Per record: route by topic, decode (fast path when the schema is exactly v1, the reference codec
otherwise), decide with `rules.Decider`, and for an eligible record build the minimised,
pseudonymised TrainingRecord and produce it. No logging and no label look-ups per record: decisions
are tallied in a dict and added to cached counter children once per batch.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException

from consumer.datapath.dead_letters import DeadLetterWriter, dead_letter_headers
from consumer.datapath.offsets import PER_RECORD_ERRORS, PendingBatch, Provenance
from consumer.datapath.output_limits import DEFAULT_MAX_VALUE_BYTES, OutputLimits, producer_max_bytes
from consumer.datapath.pseudonym import Pseudonymiser
from consumer.datapath.shadow import Pair, Shadow
from consumer.wire import fastpath
from consumer.wire.codec import AI_INTERACTION, POST, TRAINING_RECORD, Codec, CodecError
from consumer.wire.fastpath import FastPathMiss
from rules import DEFAULT_CLOCK_SKEW_MS, Decider, PairDecider, Reason, Source
from rules.decision import record_fields

ELIGIBLE = Reason.ELIGIBLE
MALFORMED = Reason.MALFORMED


class InvalidFields(CodecError):
    """The record decoded, but a field the rules or the output need is missing or of another type."""

    detail = "invalid_fields"


# How often one input record's output may be refused by the broker (in a delivery report) before it
# is dead-lettered headers-only instead: the first refusal may have been another record's, sharing
# its batch, or a topic limit that has since been read again.
MAX_OUTPUT_ATTEMPTS = 2


@dataclass
class Route:
    """How to treat the records of one input topic."""

    topic: str
    source: Source
    schema_name: str
    fast_decode: Callable[[bytes], tuple]
    fast_headers: set[bytes]  # 5-byte frames whose schema is exactly v1: the fast path applies


class BatchProcessor:
    def __init__(
        self,
        *,
        decider: Decider,
        codec: Codec,
        pseudonymiser: Pseudonymiser,
        opted_out: Callable[[bytes], bool],
        producer: Any,
        consented: Callable[[bytes], bool] | None = None,
        training_topic: str,
        dlq_topic: str,
        posts_topic: str,
        ai_interactions_topic: str,
        on_backpressure: Callable[[], None],
        limits: OutputLimits | None = None,
        shadow: Shadow | None = None,
        clock_skew_ms: int = DEFAULT_CLOCK_SKEW_MS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.decider = decider
        self._pair: PairDecider | None = None  # the pair in use: None without a shadow
        self._pair_kept: PairDecider | None = None
        self.shadow = shadow  # a candidate policy, decided beside the active one and only counted
        # The shadow's tally of one batch: only the records whose two decisions differ are listed, as
        # (source, active, shadow); the rest (usually most) are the batch's own decisions (see _shadow_pairs).
        self._differ: list[Pair] = []
        self.codec = codec
        self.pseudonymiser = pseudonymiser
        self.opted_out = opted_out
        self.consented = consented  # opt-in policies only
        self.producer = producer
        self.training_topic = training_topic
        self.dlq_topic = dlq_topic
        self.on_backpressure = on_backpressure
        if limits is None:  # no broker asked: the producer's own bound, and the broker's default topic limit
            max_value = codec.max_value_bytes or DEFAULT_MAX_VALUE_BYTES
            limits = OutputLimits.compute(max_value, producer_max_bytes(max_value), training_topic, dlq_topic, {})
        self.limits = limits
        # A record created later than the batch's start plus this is future_dated (rules.Decider.decide).
        self.clock_skew_ms = clock_skew_ms
        self.clock = clock
        self.latest_ms = 0  # of the batch being processed
        self.dead_letters = DeadLetterWriter(producer, dlq_topic, limits.dlq_record_max, on_backpressure)
        # Input records whose output the broker refused, and how often (exactly-once re-reads them).
        self.undeliverable: dict[Provenance, int] = {}
        self.header = codec.header(TRAINING_RECORD)  # with a registry, prepared by the service at start-up
        self.policy_version = decider.policy.version
        self.routes: dict[str, Route] = {}
        for topic, source, name, decode in (
            (posts_topic, Source.POST, POST, fastpath.decode_post),
            (ai_interactions_topic, Source.AI_INTERACTION, AI_INTERACTION, fastpath.decode_ai_interaction),
        ):
            self.routes[topic] = Route(topic, source, name, decode, codec.reader_frames(name))
        self._provenance: dict[tuple[str, int], bytes] = {}
        self._country: dict[bytes, bytes] = {}
        self.dlq_causes: dict[tuple[Source, str], int] = {}
        # Exceptions a record provoked on the reference path, by type (dead-lettered `undecidable`).
        self.undecidable: dict[str, int] = {}
        self.consumer_errors: list[Any] = []

    @property
    def shadow(self) -> Shadow | None:
        return self._shadow

    @shadow.setter
    def shadow(self, shadow: Shadow | None) -> None:
        # One pass decides both policies (rules.PairDecider), for less than half of what a second
        # Decider costs. Kept, memos and all, while the shadow stays the same (the benchmark switches
        # the shadow off and on between batches).
        kept = self._pair_kept
        if shadow is not None and (
            kept is None or kept.shadow is not shadow.decider or kept.active is not self.decider
        ):
            self._pair_kept = PairDecider(self.decider, shadow.decider)
        self._pair = self._pair_kept if shadow is not None else None
        self._shadow = shadow

    def process(
        self, messages: list[Any], batch: PendingBatch, tally: dict[tuple[Source, str], int]
    ) -> list[tuple[str, int, int]]:
        """Filter one batch; returns the last consumed (topic, partition, offset) of each partition.

        Written for speed: locals instead of attribute look-ups, a partition's provenance bytes and
        offsets tracked per run of records (consume() returns a partition's records together), and
        produce() with positional arguments (keyword parsing costs 0.5 µs a call).
        """
        routes = self.routes
        decide = self.decider.decide
        opted_out = self.opted_out
        consented = self.consented
        pseudonym_of = self.pseudonymiser.pseudonym
        build = fastpath.training_record
        header = self.header
        country_memo = self._country
        produce = self.producer.produce
        training_topic = self.training_topic
        delivered = batch.delivered
        eligible = ELIGIBLE
        max_bytes = self.limits.input_max  # larger values take the reference path to the DLQ
        undeliverable = self.undeliverable
        latest = self.latest_ms = int(self.clock() * 1000) + self.clock_skew_ms
        if self._pair is not None and self._pair.active is not self.decider:
            self.shadow = self._shadow  # the active decider was replaced: never decide with the old one
        decide_pair = self._pair.decide if self._pair is not None else None  # with a shadow policy
        differ = self._differ
        differ.clear()  # what a batch that raised had tallied is dropped with its decisions
        decided_before = dict(tally) if decide_pair is not None else None
        last: dict[tuple[str, int], int] = {}
        counts: dict[Reason, int] = {}
        run_topic: str | None = None
        run_partition = -1
        run_offset = -1
        route: Route | None = None
        provenance = b""
        produced = 0
        for msg in messages:
            if msg.error() is not None:
                self.consumer_errors.append(msg)  # events, not records: the service counts and logs them
                continue
            topic = msg.topic()
            partition = msg.partition()
            offset = msg.offset()
            if partition != run_partition or topic != run_topic:
                if run_topic is not None:
                    last[run_topic, run_partition] = run_offset
                    self._add_counts(route, counts, tally)
                run_topic, run_partition = topic, partition
                route = routes.get(topic)
                provenance = self._provenance_bytes(topic, partition)
            run_offset = offset
            if route is None:
                continue  # not subscribed; cannot happen unless the subscription changed under us
            value = msg.value()
            fields = None
            if undeliverable and undeliverable.get((topic, partition, offset), 0) >= MAX_OUTPUT_ATTEMPTS:
                self._undeliverable(msg, route, batch)
                continue
            if value is not None and len(value) <= max_bytes and value[:5] in route.fast_headers:
                try:
                    fields = route.fast_decode(value)
                except FastPathMiss:
                    fields = None
            if fields is None:
                self._slow(msg, value, route, batch, tally)
                continue
            user_id = fields[1]
            if decide_pair is None:
                reason = decide(
                    route.source, fields[4], fields[3], fields[2], fields[8], latest, user_id, opted_out, consented
                )
            else:
                reason, shadow = decide_pair(
                    route.source, fields[4], fields[3], fields[2], fields[8], latest, user_id, opted_out, consented
                )
                if shadow is not reason:
                    differ.append((route.source, reason, shadow))
            counts[reason] = counts.get(reason, 0) + 1
            if reason is not eligible:
                continue
            pseudonym = pseudonym_of(user_id)
            country = country_memo.get(fields[3])
            if country is None:
                country = self._country_bytes(fields[3])
            out = build(
                header,
                value,
                fields[0],
                fields[5],
                fields[6],
                fields[9],
                fields[7],
                country,
                pseudonym,
                provenance,
                offset,
            )
            produced += 1
            try:
                produce(training_topic, out, pseudonym, -1, delivered)
            except BufferError:
                batch.outstanding += produced
                produced = 0
                self._produce_when_room(training_topic, out, pseudonym, delivered)
            except KafkaException as exc:
                produced -= 1
                self._refused(exc, msg, route, batch)
        batch.outstanding += produced
        if run_topic is not None:
            last[run_topic, run_partition] = run_offset
            self._add_counts(route, counts, tally)
        if decided_before is not None:
            self.shadow.add(self._shadow_pairs(decided_before, tally))  # type: ignore[union-attr]
        return [(t, p, o) for (t, p), o in last.items()]

    @staticmethod
    def _add_counts(route: Route | None, counts: dict[Reason, int], tally: dict[tuple[Source, str], int]) -> None:
        if route is not None and counts:
            for reason, count in counts.items():
                key = (route.source, reason)
                tally[key] = tally.get(key, 0) + count
        counts.clear()

    def _shadow_pairs(
        self, before: dict[tuple[Source, str], int], tally: dict[tuple[Source, str], int]
    ) -> dict[Pair, int]:
        """(source, active, shadow) -> records of this batch. Every record the batch counted in `tally`
        was decided by the shadow too (a dead letter is malformed under both); those listed in
        `_differ` got another decision from it, the rest the same one."""
        pairs: dict[Pair, int] = dict(Counter(self._differ))
        self._differ.clear()
        differing: dict[tuple[Source, Reason], int] = {}
        for (source, changed, _), count in pairs.items():
            differing[source, changed] = differing.get((source, changed), 0) + count
        for (source, decided), count in tally.items():
            reason = Reason(decided)
            same = count - before.get((source, decided), 0) - differing.get((source, reason), 0)
            if same:
                pairs[source, reason, reason] = same
        return pairs

    # -- the less common paths -------------------------------------------------------------------

    def _slow(
        self, msg: Any, value: bytes | None, route: Route, batch: PendingBatch, tally: dict[tuple[Source, str], int]
    ) -> None:
        """Reference codec: other schema versions (resolved to v1), and anything the fast path refused.

        The error boundary of one record: whatever its writer schema or bytes, the record is decided or
        becomes a dead letter with a cause; nothing it holds raises out of the loop."""
        if value is not None and len(value) > self.limits.input_max:  # may be below the codec's own bound
            self._dead_letter(msg, route, "oversized", batch, tally)
            return
        try:
            reason, shadow, out, pseudonym = self._decide_slow(msg, value, route)
        except CodecError as exc:
            self._dead_letter(msg, route, exc.detail, batch, tally)
            return
        except Exception as exc:  # a defect, or a record no check foresaw: this record only, never the loop
            error = type(exc).__name__
            self.undecidable[error] = self.undecidable.get(error, 0) + 1
            self._dead_letter(msg, route, "undecidable", batch, tally)
            return
        if shadow is not None and shadow is not reason:
            self._differ.append((route.source, reason, shadow))
        key = (route.source, reason)
        tally[key] = tally.get(key, 0) + 1
        if out is None:
            return
        batch.outstanding += 1
        try:
            self.producer.produce(self.training_topic, out, pseudonym, -1, batch.delivered)
        except BufferError:
            self._produce_when_room(self.training_topic, out, pseudonym, batch.delivered)
        except KafkaException as exc:
            batch.outstanding -= 1
            self._refused(exc, msg, route, batch)

    def _decide_slow(
        self, msg: Any, value: bytes | None, route: Route
    ) -> tuple[Reason, Reason | None, bytes | None, bytes | None]:
        """(reason, shadow reason or None, the framed TrainingRecord of an eligible record, its key).
        Raises CodecError (or anything a record could provoke): the caller dead-letters the record."""
        schema_id, record = self.codec.decode(value, route.schema_name, lookup=False)
        if value is not None and self.codec.is_reader_schema(schema_id, route.schema_name):
            route.fast_headers.add(value[:5])  # e.g. a registry id for the v1 schema: fast from now on
        fields = record_fields(route.source, record)
        if fields is None:
            raise InvalidFields("a required field is missing or of another type")
        public, country, birth_day, created_ms, user_id = fields
        args = (route.source, public, country, birth_day, created_ms, self.latest_ms, user_id.encode("utf-8"))
        shadow = None
        if self._pair is None:
            reason = self.decider.decide(*args, self.opted_out, self.consented)
        else:
            reason, shadow = self._pair.decide(*args, self.opted_out, self.consented)
        if reason is not ELIGIBLE:
            return reason, shadow, None, None
        pseudonym = self.pseudonymiser.pseudonym(user_id.encode("utf-8"))
        if route.source is Source.POST:
            text, prompt, response = record["text"], None, None
            record_id = record["post_id"]
        else:
            text, prompt, response = None, record["prompt"], record["response"]
            record_id = record["interaction_id"]
        out = self.codec.encode(
            TRAINING_RECORD,
            {
                "record_id": record_id,
                "source": str(route.source),
                "text": text,
                "prompt": prompt,
                "response": response,
                "language": record.get("language"),
                "country": self.decider.allowed_country(country),
                "created_at": created_ms,
                "author_pseudonym": pseudonym.decode("ascii"),
                "policy_version": self.policy_version,
                "source_topic": msg.topic(),
                "source_partition": msg.partition(),
                "source_offset": msg.offset(),
            },
        )
        return reason, shadow, out, pseudonym

    def _dead_letter(
        self, msg: Any, route: Route, cause: str, batch: PendingBatch, tally: dict[tuple[Source, str], int]
    ) -> None:
        key = (route.source, MALFORMED)
        tally[key] = tally.get(key, 0) + 1
        # With a shadow: what does not decode is malformed under every policy (counted from `tally`).
        cause_key = (route.source, cause)
        self.dlq_causes[cause_key] = self.dlq_causes.get(cause_key, 0) + 1
        provenance = (msg.topic(), msg.partition(), msg.offset())
        headers = dead_letter_headers("malformed", cause, provenance, msg.timestamp()[1], msg.headers())
        refused_before = bool(self.undeliverable) and provenance in self.undeliverable
        self.dead_letters.write(batch, msg.value(), msg.key(), headers, provenance, force_truncate=refused_before)

    # -- outputs the broker will never take --------------------------------------------------------

    def _refused(self, exc: KafkaException, msg: Any, route: Route, batch: PendingBatch) -> None:
        """produce() refused a training record at once (e.g. larger than message.max.bytes)."""
        err = exc.args[0]
        if err.code() not in PER_RECORD_ERRORS:
            raise exc
        self._undeliverable(msg, route, batch, err.name())

    def _undeliverable(self, msg: Any, route: Route, batch: PendingBatch, error: str = "refused_before") -> None:
        """An eligible record whose output cannot be written: a headers-only dead letter points at it."""
        provenance = (msg.topic(), msg.partition(), msg.offset())
        cause_key = (route.source, "output_rejected")
        self.dlq_causes[cause_key] = self.dlq_causes.get(cause_key, 0) + 1
        headers = dead_letter_headers("undeliverable", "output_rejected", provenance, msg.timestamp()[1], None)
        headers.append(("tf.error", error.encode()))
        self.dead_letters.write(batch, msg.value(), msg.key(), headers, provenance, force_truncate=True)

    def note_refused(self, batch: PendingBatch) -> None:
        """Exactly-once: the transaction of `batch` is aborted and its input read again; remember which
        input records the broker refused, so that a record refused again is dead-lettered instead."""
        for rejected in batch.rejected:
            provenance = rejected.provenance or self.training_provenance(rejected.value)
            if provenance is not None:
                self.undeliverable[provenance] = self.undeliverable.get(provenance, 0) + 1
        batch.rejected.clear()

    def replace_refused(self, batch: PendingBatch) -> None:
        """At-least-once: write again what the broker refused in `batch`'s delivery reports. A training
        record gets one more attempt (it may only have shared a batch with the culprit) while it fits
        the current limits; after that, or for a dead letter, a headers-only dead letter."""
        pending, batch.rejected = batch.rejected, []
        for rejected in pending:
            if rejected.output == "dlq":
                assert rejected.provenance is not None and rejected.headers is not None
                headers = [*rejected.headers, ("tf.error", rejected.error.encode())]
                self.dead_letters.write(batch, None, None, headers, rejected.provenance, force_truncate=True)
                continue
            provenance = self.training_provenance(rejected.value)
            if provenance is None:  # cannot happen for a record this service built; fail loudly, not silently
                raise ValueError("a refused training record without provenance")
            attempts = self.undeliverable[provenance] = self.undeliverable.get(provenance, 0) + 1
            size = len(rejected.value or b"") + len(rejected.key or b"")
            if attempts < MAX_OUTPUT_ATTEMPTS and size <= self.limits.training_record_max:
                batch.outstanding += 1
                try:
                    self.producer.produce(self.training_topic, rejected.value, rejected.key, -1, batch.delivered)
                except BufferError:
                    self._produce_when_room(self.training_topic, rejected.value, rejected.key, batch.delivered)
                continue
            headers = dead_letter_headers("undeliverable", "output_rejected", provenance, -1, None)
            headers.append(("tf.error", rejected.error.encode()))
            self.dead_letters.write(batch, None, None, headers, provenance, force_truncate=True)
            route = self.routes.get(provenance[0])
            if route is not None:
                cause_key = (route.source, "output_rejected")
                self.dlq_causes[cause_key] = self.dlq_causes.get(cause_key, 0) + 1

    def training_provenance(self, value: bytes | None) -> Provenance | None:
        """(source_topic, source_partition, source_offset) of a TrainingRecord this service built."""
        try:
            record = self.codec.decode_own(value, TRAINING_RECORD)  # never a registry look-up
        except CodecError:
            return None
        return record["source_topic"], record["source_partition"], record["source_offset"]

    def resolve_schemas(self, messages: list[Any]) -> None:
        """With a registry: look up the batch's schema ids not yet known before any record is decided,
        so that a registry outage holds the whole batch (RegistryUnavailable) instead of dead-lettering
        records it merely could not look up. Bounded: the most frequent ids first, at most
        `lookups_per_batch` of them within `lookup_budget_seconds` (registry.RegistrySettings); records of
        ids left over are dead letters (`schema_lookup_limit`), so a flood of random ids cannot stall the
        loop. Ids that turn out to be exactly v1 take the fast path from now on."""
        codec = self.codec
        if codec.registry is None:
            return
        unknown: Counter[int] = Counter()
        for msg in messages:
            value = msg.value()
            if value is not None and len(value) >= 5 and value[0] == 0:
                route = self.routes.get(msg.topic())
                if route is not None and value[:5] not in route.fast_headers:
                    schema_id = int.from_bytes(value[1:5], "big")
                    if not codec.known(schema_id):
                        unknown[schema_id] += 1
        if unknown:
            settings = codec.registry.settings
            ordered = [schema_id for schema_id, _ in unknown.most_common()]
            codec.resolve(ordered, settings.lookups_per_batch, settings.lookup_budget_seconds)
            for route in self.routes.values():
                route.fast_headers |= codec.reader_frames(route.schema_name)

    def set_limits(self, limits: OutputLimits) -> None:
        self.limits = limits
        self.dead_letters.max_record_bytes = limits.dlq_record_max

    def _produce_when_room(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        delivered: Any,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """The producer's queue is full: serve delivery reports until there is room. Never drops."""
        while True:
            self.on_backpressure()
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=delivered)
                return
            except BufferError:
                continue

    def _country_bytes(self, raw: bytes) -> bytes:
        encoded = self._country.get(raw)
        if encoded is None:
            code = self.decider.allowed_country(raw)
            assert code is not None  # only called for eligible records, which passed the region check
            encoded = fastpath.avro_string(code)
            if len(self._country) < 4096:  # raw spellings ("de", " DE ") are few unless input is hostile
                self._country[raw] = encoded
        return encoded

    def _provenance_bytes(self, topic: str, partition: int) -> bytes:
        encoded = self._provenance.get((topic, partition))
        if encoded is None:
            encoded = self._provenance[(topic, partition)] = (
                fastpath.avro_string(self.policy_version)
                + fastpath.avro_string(topic)
                + fastpath.zigzag_varint(partition)
            )
        return encoded
