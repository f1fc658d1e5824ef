#!/usr/bin/env bash
# Start, stop or run the local schema registry (Apicurio Registry, in memory, Confluent API) of the tests.
#   deploy/schema-registry/registry.sh start   -> prints the ccompat URL; the registry keeps running
#   deploy/schema-registry/registry.sh stop    -> stops it (its storage is in memory: all is gone)
#   deploy/schema-registry/registry.sh run     -> foreground until Ctrl-C
#   deploy/schema-registry/registry.sh build   -> only build it with Maven (cached after the first time)
# start and stop take --state FILE: where start records the running registry (default
# ~/.cache/training-filter/local-registry.json); see docs/development.md, the local Kafka.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/../../.venv/bin/python}"
[ -x "$python" ] || python="python3"
cd "$here/../.."
exec "$python" -m consumer.devtools.local_registry "$@"
