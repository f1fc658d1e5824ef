"""The feeds: compacted privacy topics mirrored into in-memory sets and synced before input is decided.

`mirror.TopicMirror` is the one mechanism (every partition assigned, the catch-up, the per-batch sync,
the snapshot's position); an applier says what a record does (consumer/optouts/applier.py,
consumer/consents/applier.py); `feeds.Feeds` is the opt-out mirror and the consent mirror as the one
feed the service syncs; `background.BackgroundSync` syncs it on a thread of its own; `ends` is what a
sync asks the broker; `records` reads the privacy topics' records.
"""
