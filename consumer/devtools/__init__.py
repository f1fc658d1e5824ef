"""Development tools, not part of the service or its image: the local Kafka broker and schema
registry (`local_kafka`, `local_registry`), a synthetic stream with known decisions (`generator`),
the demo (`demo`), topic creation (`topics`) and the documentation's generated tables and link check
(`docs`: `make docs`). They need the `[tools]` extra (tqdm) and a checkout."""
