# fakeedge: the Cloudflare edge with Access, for a compose network (docs/tls.md, compose.dev.yml).
FROM python:3.12-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fakeedge ./fakeedge
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
# 443: TLS, as every app host and as <team>.cloudflareaccess.com; 80: plain HTTP (the health check)
EXPOSE 80 443
# root, to bind 443 and own the keys volume; the keys stay in the volume, never in the image
ENTRYPOINT ["fakeedge"]
CMD ["serve", "--config", "/etc/fakeedge/fakeedge.yml"]
