# training-filter container image.
#   build:  docker build -t training-filter .            (or: podman build; `make image` builds it here)
#   run:    docker run --env-file tf.env -p 9100:9100 training-filter
# Two stages: the first compiles consumer/wire/fastpath.py with Cython (gcc), the second holds only the
# virtual environment and Python. Debian, not Alpine: confluent-kafka ships manylinux wheels.
#
# BASE is any Debian bookworm image with Python 3.11 (its headers included) and `python3 -m venv`:
# the official python:3.11.7-slim-bookworm (Python in /usr/local) by default, or a stand-in made with
# debootstrap from Debian's packages (Python in /usr, see deploy/image/build.py). Both stages use it,
# so the virtual environment's interpreter link points at the same Python in the final image.
ARG BASE=python:3.11.7-slim-bookworm

FROM ${BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY avro ./avro
COPY rules ./rules
COPY consumer ./consumer
# The check runs with -P (no current directory on sys.path): from /src, `import consumer` would find
# the source consumer/wire/fastpath.py instead of the compiled module installed in the venv.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir . \
 && /opt/venv/bin/python -P -c "import consumer.wire.fastpath as f; assert f.COMPILED, 'the fast path did not compile: ' + f.__file__" \
 && /opt/venv/bin/python -P -c "import consumer.consents.fingerprints as c; assert c.COMPILED, 'the consent set did not compile: ' + c.__file__"

FROM ${BASE}
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
