"""The opt-out side: the feed that reads the opt-out and revocations topics into the filter before
every batch (`feed`), the Bloom filter and its snapshot (`filter`), and the revocations emitted for
every opt-out (`revocations`)."""
