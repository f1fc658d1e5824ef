"""`training-filter run`, in the order of the process's life:

1. `preflight`: every setting checked before any connection (the CLI's entry point; exit 2 on a bad one).
2. `service`: `Service.run()`, the life of the process top to bottom, and its exit code.
3. `assemble`: every part built from the settings, in dependency order, into one frozen `parts.Parts`
   (the clients it makes from `client_configs`).
4. `lifecycle`: the waits of start-up (the output schemas, the feeds' catch-up), pause and resume,
   shutdown; `rebalances`: the input consumer's callbacks.
5. `loop`: one turn of the data (fetch, hold for the feeds' sync, decide, deliver); it returns what
   happened, and `upkeep` is the one place that counts, logs and acts on it.
6. `state` and `probes`: the few numbers the threads share, and /healthz and /readyz from them.
"""

from consumer.service.service import Service

__all__ = ["Service"]
