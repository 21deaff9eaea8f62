# The inference service on the official Python image. CPU TensorFlow by default; for a GPU build:
#   docker compose --profile gpu up      (or: docker build --build-arg TENSORFLOW='tensorflow[and-cuda]==2.21.0' .)
# Behind a TLS-intercepting proxy, pass its CA as a BuildKit secret (never baked into the image):
#   EXTRA_CA_BUNDLE=/path/to/proxy-ca.pem docker compose build
#   docker build --secret id=extra_ca,src=/path/to/proxy-ca.pem .

FROM python:3.11-slim AS build
# Empty: the locked tensorflow-cpu. For the GPU image: --build-arg TENSORFLOW='tensorflow[and-cuda]==2.21.0'.
ARG TENSORFLOW=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=secret,id=extra_ca,required=false \
    set -e; \
    if [ -s /run/secrets/extra_ca ]; then \
        cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca > /tmp/ca.pem; \
        export PIP_CERT=/tmp/ca.pem; \
    fi; \
    /opt/venv/bin/pip install --no-compile --require-hashes -r /tmp/requirements.lock; \
    if [ -n "$TENSORFLOW" ]; then \
        /opt/venv/bin/pip uninstall --yes tensorflow-cpu; \
        /opt/venv/bin/pip install --no-compile "$TENSORFLOW"; \
    fi; \
    rm -f /tmp/ca.pem /tmp/requirements.lock
# The project itself, as a wheel (its dependencies are all in place already).
COPY pyproject.toml README.md /src/
COPY app/ /src/app/
COPY training/ /src/training/
RUN --mount=type=secret,id=extra_ca,required=false \
    set -e; \
    if [ -s /run/secrets/extra_ca ]; then \
        cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca > /tmp/ca.pem; \
        export PIP_CERT=/tmp/ca.pem; \
    fi; \
    /opt/venv/bin/pip install --no-compile --no-deps /src; \
    rm -f /tmp/ca.pem
# Shrink what serving never uses: TensorFlow's C++ headers (287 MB) and libclang (61 MB, for its build
# tooling), pip itself, and the debug symbols of TensorFlow's two core libraries (205 MB of
# libtensorflow_cc alone; the dynamic symbol table that loading needs stays). Only those two: the wheels
# repaired by auditwheel (numpy's OpenBLAS, say) no longer load once stripped. binutils, in this stage only.
RUN set -e; \
    apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils > /dev/null; \
    site=/opt/venv/lib/python3.11/site-packages; \
    rm -rf "$site/tensorflow/include" "$site/clang" "$site"/libclang-*.dist-info; \
    /opt/venv/bin/python -m pip uninstall --yes --quiet pip; \
    strip --strip-unneeded "$site/tensorflow/libtensorflow_cc.so.2" "$site/tensorflow/libtensorflow_framework.so.2"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
# Default models; docker-compose.yml mounts ./models over this, read-only, so new versions need no rebuild.
COPY models/ models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    APP_MODEL_DIR=/srv/models
USER app
EXPOSE 8000 8001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]
CMD ["image-classifier"]
