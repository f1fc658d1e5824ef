"""`training-filter run`: the parts built from the settings (`wiring`), the loop (`loop`), the
lifecycle around it (`lifecycle`: start-up gating, rebalances, pause and resume, snapshots and
summaries, shutdown), and the `Service` that runs them (`service`)."""

from consumer.service.service import Service

__all__ = ["Service"]
