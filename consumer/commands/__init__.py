"""The operator commands shipped with the service: the policy debugger (`check`), and JSON Lines in
and out of topics (`topic_io`: produce, tail; `jsonl`). The image carries them: an operator uses
them next to the running service."""
