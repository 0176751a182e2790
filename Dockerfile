# Lightbox: DICOMweb server + viewer.
#   docker build -t lightbox .
#   docker run -p 8080:8080 -v lightbox-data:/data -e LIGHTBOX_AUTH=token lightbox
#   docker exec -it <container> python -m server token create --role reader
# Listening on 0.0.0.0 without authentication is refused: set LIGHTBOX_AUTH (token, basic,
# oidc) or, on a private network only, LIGHTBOX_INSECURE=1. Put nginx/lightbox.conf in front
# for TLS, or give LIGHTBOX_TLS_CERT / LIGHTBOX_TLS_KEY.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when pyproject.toml changes. Every codec
# (pylibjpeg-*, pyjpegls) ships manylinux wheels, so no compiler is needed.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code runs from /app (python -m server), so web/ sits beside server/ as Settings expects.
COPY server/ ./server/
COPY web/ ./web/

RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home lightbox \
    && mkdir -p /data \
    && chown lightbox:lightbox /data
USER lightbox

ENV LIGHTBOX_HOST=0.0.0.0 \
    LIGHTBOX_PORT=8080 \
    LIGHTBOX_DATA=/data
VOLUME /data
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request; tls = bool(os.environ.get('LIGHTBOX_TLS_CERT')); url = ('https' if tls else 'http') + '://127.0.0.1:' + os.environ.get('LIGHTBOX_PORT', '8080') + '/healthz'; urllib.request.urlopen(url, timeout=4, context=ssl._create_unverified_context() if tls else None)"]

CMD ["python", "-m", "server"]
