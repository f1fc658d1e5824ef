"""The wire format: Confluent-framed Avro (`codec`), its compiled fast path for the v1 inputs
(`fastpath`), the strict encoding check before fastavro (`strict_avro`), and the schema registry
(`registry`)."""
