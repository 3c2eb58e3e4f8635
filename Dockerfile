# One image for every role of integration-bus: `bus worker`, `bus serve` (sources), `bus
# scheduler`, `bus run` (all in one), `bus db upgrade` (migrations) and, later, the console.
# The role is the command: `docker run IMAGE worker`, `docker run IMAGE db upgrade`, ...
#
# BASE must be a Debian bookworm image with Python 3.11 and its venv module: python:3.11-slim-
# bookworm from Docker Hub by default; deploy/base-image.sh builds an equivalent one from
# Debian's own packages where Docker Hub cannot be reached.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md LICENSE ./
COPY integration_bus integration_bus
COPY connectors connectors
RUN python3 -m venv /opt/bus \
 && /opt/bus/bin/pip install --no-cache-dir --disable-pip-version-check ".[postgres]"

FROM ${BASE}
LABEL org.opencontainers.image.title="integration-bus" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/integration-bus/integration-bus"
# An unprivileged user owns nothing but the writable state under /srv/bus/var.
RUN groupadd --system --gid 10001 bus \
 && useradd --system --uid 10001 --gid bus --home-dir /srv/bus --shell /usr/sbin/nologin bus
COPY --from=build /opt/bus /opt/bus
WORKDIR /srv/bus
# The reference project (config, mappings, schemas); production mounts its own over these.
COPY config config
COPY mappings mappings
COPY schemas schemas
# var/pos/inbox: the reference config's POS drop folder (a named volume starts as a copy of it)
RUN mkdir -p var/pos/inbox && chown -R bus:bus var
ENV PATH=/opt/bus/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BUS_CONFIG_DIR=/srv/bus/config \
    BUS_LOG_JSON=1
USER bus:bus
VOLUME ["/srv/bus/var"]
ENTRYPOINT ["bus"]
CMD ["--help"]
