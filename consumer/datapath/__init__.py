"""The data path: one consumed batch in, training records and dead letters out (`batch`), and when
its input offsets may be committed (`delivery`, `offsets`). Also the output's size limits
(`output_limits`), dead letters (`dead_letters`) and pseudonyms (`pseudonym`)."""
