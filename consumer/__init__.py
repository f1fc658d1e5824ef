"""training-filter: the service shell. All Kafka, HTTP, file and clock I/O lives here; the policy is in `rules`."""

__version__ = "0.1.0"
