# The Python sample origins, one image for both (compose.dev.yml runs each script as a service).
# They stand for your own services: nothing in them knows about fakeedge.
# BASE: any image with Python 3.11+ as `python` and pip (see the Dockerfile at the top).
ARG BASE=docker.io/library/python:3.12-slim-bookworm
FROM ${BASE}
RUN pip install --no-cache-dir "pyjwt[crypto]>=2.8"
COPY public_api.py admin_api.py /srv/
# not root: the CA certificate must be (and is) readable by anyone
USER nobody
