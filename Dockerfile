# webhook-gateway container image.
#
#   docker build -t webhook-gateway .
#   docker run --read-only -e TG_SECRET=... -p 8080:8080 webhook-gateway
#
# Two stages: `build` turns this checkout into a wheel and installs it into a virtualenv;
# the runtime stage copies only that virtualenv (no compiler, no pip cache, no sources).
# The RUN steps of the build stage are executed as they stand by tests/deploy/test_dockerfile.py
# (without Docker), so keep every path in them relative or in $VENV.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VENV=/opt/webhook-gateway
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir dist . \
    && python -m venv "$VENV" \
    && "$VENV/bin/pip" install --no-cache-dir dist/*.whl \
    && "$VENV/bin/pip" uninstall --yes setuptools pip \
    && "$VENV/bin/webhook-gateway" --help >/dev/null

FROM ${PYTHON_IMAGE}
# No .pyc writes at run time (the wheel's bytecode is compiled at install), unbuffered logs:
# the root filesystem can be mounted read-only.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VENV=/opt/webhook-gateway \
    PATH=/opt/webhook-gateway/bin:$PATH
RUN groupadd --system --gid 10001 webhook-gateway \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin webhook-gateway
COPY --from=build /opt/webhook-gateway /opt/webhook-gateway
# The default config; in Kubernetes a ConfigMap is mounted over this directory.
COPY config/gateway.yaml /etc/webhook-gateway/gateway.yaml
USER 10001:10001
WORKDIR /
# 8080: webhooks; 9090: /metrics /healthz /readyz (the shipped config binds it to 127.0.0.1;
# a pod's config sets admin_listen: 0.0.0.0:9090 so probes and Prometheus reach it).
EXPOSE 8080 9090
ENTRYPOINT ["webhook-gateway"]
CMD ["run", "--config", "/etc/webhook-gateway/gateway.yaml"]
