# Image for the worker, scheduler and migrate services of docker-compose.yml.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY domain ./domain
COPY db ./db
COPY workers ./workers
COPY migrations ./migrations
COPY scripts ./scripts
RUN pip install --no-cache-dir -e ".[prometheus]"
RUN useradd --create-home --uid 10001 worker && mkdir -p /media && chown worker /media
USER worker
ENV MEDIA_DIR=/media LOG_FORMAT=json
ENTRYPOINT ["emotionviz"]
