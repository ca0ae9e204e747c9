# syntax=docker/dockerfile:1
# The image of docker-compose.yml's migrate, worker, intake-worker and scheduler services.
# One Dockerfile for linux/amd64 and linux/arm64: it installs the production lock only
# (requirements/prod.txt: binary wheels exist for both), never the embedded development
# servers, which exist for one architecture.
#   docker build -t emotionviz-workers .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/emotionviz-workers .
# Debian 13's PostgreSQL client is 17, the server version docker-compose.yml runs.
ARG PYTHON_IMAGE=python:3.11-slim-trixie

# --- build: the locked dependencies first (this layer is rebuilt only when the lock
# changes), then the project's own wheel, in a virtualenv copied whole to the runtime.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY requirements/prod.txt /tmp/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --require-hashes --only-binary=:all: -r /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY db ./db
COPY workers ./workers
COPY migrations ./migrations
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
    && emotionviz --help > /dev/null

# --- runtime: Python, the PostgreSQL client (backup, restore), the virtualenv.
FROM ${PYTHON_IMAGE} AS runtime
# Debian's security updates replace package versions, so pinning one here would break
# the build when it is superseded; the base image tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/emotionviz emotionviz \
    && install -d -o emotionviz -g emotionviz /media /backups
COPY --from=build /opt/venv /opt/venv
# PROVIDER=gemini: a deployment never falls back to the offline placeholder providers
# for want of a key; without GEMINI_API_KEY the worker exits 2 and says so. PROVIDER=local
# runs the offline ones on purpose (a trial).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MEDIA_DIR=/media \
    LOG_FORMAT=json \
    PROVIDER=gemini
USER 10001:10001
WORKDIR /home/emotionviz
# Images and thumbnails; backups written by `emotionviz backup /backups/NAME.dump`.
VOLUME ["/media", "/backups"]
# The worker's /metrics, /healthz and /readyz (METRICS_PORT).
EXPOSE 9191
ENTRYPOINT ["emotionviz"]
CMD ["worker"]
