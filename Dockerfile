# chr-node on Debian bookworm: its system OpenSSL (3.0) still offers the secp256k1 TLS group that
# the device and peer ports need (SPEC 3); OpenSSL 3.5+ turns it off by default.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHR_DATA_DIR=/var/lib/chr-node \
    CHR_CONFIG=/etc/chr-node/chronara.toml

RUN useradd --system --create-home --home-dir /var/lib/chr-node --shell /usr/sbin/nologin chr

WORKDIR /opt/chr-node
COPY setup.py README.md ./
COPY chrnode ./chrnode
COPY actors ./actors
RUN pip install --no-cache-dir . && rm -rf /root/.cache
COPY conf/chronara.toml /etc/chr-node/chronara.toml

USER chr
VOLUME ["/var/lib/chr-node"]
# JSON-RPC http, https; EdgeV2 device ports; peer port. Thespian's own ports stay on 127.0.0.1.
EXPOSE 8545 8443 41046 41047 51055

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8545/health', timeout=8).status == 200 else 1)"]

ENTRYPOINT ["chr-node"]
CMD ["start"]
