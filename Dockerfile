# fakeedge: the Cloudflare edge with Access, for a compose network (docs/containers.md).
# BASE: any image with Python 3.11+ as `python` and pip, and useradd. Override it where Docker Hub
# is unreachable: docker build --build-arg BASE=registry.example.com/python:3.12-slim-bookworm .
ARG BASE=docker.io/library/python:3.12-slim-bookworm
FROM ${BASE}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fakeedge ./fakeedge
# the fast extra: uvloop, which fakeedge serve uses when installed (README, Speed);
# not root: uid 10001 owns keys_dir (a volume copies this owner and mode when it is first mounted)
RUN pip install --no-cache-dir '.[fast]' && rm -rf /src \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/fakeedge --shell /usr/sbin/nologin fakeedge \
 && mkdir -p /etc/fakeedge /var/lib/fakeedge/ca-cert \
 && chown 10001:10001 /var/lib/fakeedge /var/lib/fakeedge/ca-cert \
 && chmod 0711 /var/lib/fakeedge && chmod 0755 /var/lib/fakeedge/ca-cert
WORKDIR /var/lib/fakeedge
USER 10001:10001
# 443: TLS, as every app host and as <team>.cloudflareaccess.com; 80: plain HTTP inside the network.
# A non-root process binds them where net.ipv4.ip_unprivileged_port_start allows it: Docker sets
# it to 0 in every container; with podman, pass --sysctl net.ipv4.ip_unprivileged_port_start=80.
EXPOSE 80 443
# the keys and the CA exist before fakeedge listens: healthy means origins can trust it
HEALTHCHECK --interval=2s --timeout=3s --retries=15 CMD ["fakeedge", "health", "--config", "/etc/fakeedge/fakeedge.yml"]
ENTRYPOINT ["fakeedge"]
CMD ["serve", "--config", "/etc/fakeedge/fakeedge.yml"]
