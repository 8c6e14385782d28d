# The two sample origins. They stand for your own services: nothing in them knows about fakeedge.
FROM python:3.12-slim
RUN pip install --no-cache-dir "pyjwt[crypto]>=2.8"
COPY public_api.py admin_api.py /srv/
# not root: the CA certificate must be (and is) readable by anyone
USER nobody
