# training-filter container image.
#   build:  docker build -t training-filter .
#   run:    docker run --env-file tf.env -p 9100:9100 training-filter
# Two stages: the first compiles consumer/fastpath.py with Cython (gcc), the second holds only the
# virtual environment and Python. Debian slim, not Alpine: confluent-kafka ships manylinux wheels.

FROM python:3.11.7-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY avro ./avro
COPY rules ./rules
COPY consumer ./consumer
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir . \
 && /opt/venv/bin/python -c "import consumer.fastpath as f; assert f.COMPILED, 'the fast path did not compile'"

FROM python:3.11.7-slim-bookworm
# A fixed, unprivileged uid/gid: the Kubernetes securityContext (runAsUser 10001) relies on it.
RUN groupadd --system --gid 10001 training-filter \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin training-filter \
 && mkdir -p /var/lib/training-filter \
 && chown 10001:10001 /var/lib/training-filter
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_OPTOUT_SNAPSHOT_PATH=/var/lib/training-filter/optouts.snapshot
USER 10001:10001
EXPOSE 9100
# Exec form: the service is PID 1 and handles SIGTERM and SIGINT itself (finish, flush, commit, exit 0).
# It starts no child processes, so there are no zombies to reap and no init (tini) is needed.
ENTRYPOINT ["training-filter"]
CMD ["run"]
