# syntax=docker/dockerfile:1
# ModelRunner images. Targets:
#   worker (default, last stage)  docker build -t modelrunner-worker .
#   models (synthetic model server) docker build --target models -t modelrunner-models .
#   bioimageio (bioimage.io adapter) docker build --target bioimageio -t modelrunner-bioimageio .
# Needs BuildKit (the default builder of Docker Engine 23+ and of `docker compose build`):
# the runtime stage bind-mounts the wheels from the builder instead of copying them in.

# --- builder: wheels for the dependencies, then for the project -----------------------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src

# Dependencies first: this layer is rebuilt only when pyproject.toml changes, not on every
# source edit. rasterio, numpy, shapely, orjson ship manylinux wheels (GDAL inside rasterio's),
# so no compiler and no system GDAL are needed.
COPY pyproject.toml ./
RUN mkdir -p /wheels/deps /wheels/app \
    && python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep=chr(10))" \
        > /wheels/deps/requirements.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels/deps -r /wheels/deps/requirements.txt \
    && mkdir -p /wheels/bioimageio \
    && python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bioimageio'], sep=chr(10))" \
        > /wheels/bioimageio/requirements.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels/bioimageio -r /wheels/bioimageio/requirements.txt

# Then the project (the packages pyproject's package discovery includes, infra/sample too).
COPY README.md ./
COPY worker ./worker
COPY tiling ./tiling
COPY postprocessing ./postprocessing
COPY models ./models
COPY infra ./infra
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels/app .

# --- runtime: a venv with the wheels, a non-root user ---------------------------------------
FROM python:3.11-slim-bookworm AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MODELRUNNER_HEALTH_FILE=/tmp/modelrunner.alive

RUN groupadd --system --gid 10001 modelrunner \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home \
        --home-dir /app --shell /usr/sbin/nologin modelrunner \
    && python -m venv /opt/venv

# Two installs from two bind mounts: the dependency layer stays cached while only the
# project's wheel changes. --no-index: nothing is fetched at this point.
RUN --mount=type=bind,from=builder,source=/wheels/deps,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels -r /wheels/requirements.txt
RUN --mount=type=bind,from=builder,source=/wheels/app,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/modelrunner-*.whl \
    && python -c "import rasterio, worker.service, models.server, infra.bootstrap"

WORKDIR /app
USER 10001:10001

# --- models: the synthetic model server (SageMaker container contract) ----------------------
FROM runtime AS models
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=3)"]
# Bind every interface: the server's default (127.0.0.1) is unreachable from other containers.
CMD ["python", "-m", "models", "--host", "0.0.0.0", "--port", "8080"]

# --- bioimageio: the bioimage.io runner adapter (SageMaker contract, local backend) ----------
# docker run -v /path/to/models:/models:ro -p 8080:8080 modelrunner-bioimageio \
#   --package my-model=/models/my-model.zip
FROM runtime AS bioimageio
USER 0:0
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels/deps --find-links=/wheels/bioimageio \
        -r /wheels/bioimageio/requirements.txt \
    && python -c "import bioimageio.core, onnxruntime, models.bioimageio.local"
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=3)"]
ENTRYPOINT ["python", "-m", "models.bioimageio", "--host", "0.0.0.0", "--port", "8080"]

# --- worker (default target): polls SQS until SIGTERM ---------------------------------------
FROM runtime AS worker
# The loop touches MODELRUNNER_HEALTH_FILE every turn; worker.health fails when it is older
# than MODELRUNNER_HEALTH_MAX_AGE_S (120 s), i.e. when the loop is stuck, not only when gone.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "worker.health"]
# SIGTERM: finish or release the work in hand within MODELRUNNER_GRACE_PERIOD_S, exit 0.
# Give the container more than that before SIGKILL (compose stop_grace_period, k8s
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "worker"]
