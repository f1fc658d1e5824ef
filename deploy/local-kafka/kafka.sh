#!/usr/bin/env bash
# Start, stop or run the local single-node Kafka (KRaft) used by the demo and the tests.
#   deploy/local-kafka/kafka.sh start   -> prints the bootstrap address; the broker keeps running
#   deploy/local-kafka/kafka.sh stop    -> controlled shutdown, data folder removed
#   deploy/local-kafka/kafka.sh run     -> foreground until Ctrl-C
#   deploy/local-kafka/kafka.sh fetch   -> only fetch the broker jars from Maven Central
# start and stop take --state FILE: where start records the running broker (default
# ~/.cache/training-filter/local-kafka.json); see docs/development.md, the local Kafka.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/../../.venv/bin/python}"
[ -x "$python" ] || python="python3"
cd "$here/../.."
exec "$python" -m consumer.devtools.local_kafka "$@"
