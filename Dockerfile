# chr-node on Debian bookworm: its system OpenSSL (3.0) still offers the secp256k1 TLS group that
# the device and peer ports need (SPEC 3); OpenSSL 3.5+ turns it off by default.
# Build: docker build -t chr-node .   Run, volumes, CHR_HOST, the chain: docs/docker.md.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHR_DATA_DIR=/var/lib/chr-node \
    CHR_CONFIG=/etc/chr-node/chronara.toml \
    CHR_RPC_BIND=0.0.0.0

# tini as PID 1: it reaps zombies (Thespian's admin detaches from the daemon, so orphans end up
# with PID 1) and passes SIGTERM on, so `docker stop` stops the actors in order. Not pinned to a
# version: Debian stable's security updates replace the exact one, and the pin would then fail.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid, so a bind-mounted data dir can be chowned to it (docs/docker.md).
RUN groupadd --system --gid 10001 chr \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/chr-node --create-home \
        --shell /usr/sbin/nologin chr \
    && chmod 0700 /var/lib/chr-node

WORKDIR /opt/chr-node
COPY setup.py README.md ./
COPY chrnode ./chrnode
COPY actors ./actors
RUN pip install --no-cache-dir . && rm -rf /root/.cache
COPY conf/chronara.toml /etc/chr-node/chronara.toml

USER 10001:10001
VOLUME ["/var/lib/chr-node"]
# JSON-RPC http, https; EdgeV2 device ports; peer port. Thespian's own ports stay on 127.0.0.1.
EXPOSE 8545 8443 41046 41047 51055

# GET /health on the JSON-RPC port the node bound (from its ports file, so CHR_RPC_PORT may change).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import json, os, sys, urllib.request; port = json.load(open(os.path.join(os.environ['CHR_DATA_DIR'], 'ports.json')))['rpc']; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=8).status == 200 else 1)"]

ENTRYPOINT ["tini", "--", "chr-node"]
CMD ["start"]
