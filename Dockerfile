# ModelRunner images (docs/deployment.md). Targets:
#   worker (default, last stage)  the service alone: no emulator, test models or local stack
#   models      the synthetic model server (SageMaker container contract) and infra (bootstrap)
#   bioimageio  the bioimage.io runner adapter (models + bioimage.io core, onnxruntime)
#   emulator    moto in server mode on port 4566: a stand-in for LocalStack (compose override)
# infra/container/build.sh builds them all with the tags the compose file and manifests use.
# Needs BuildKit (Docker Engine 23+, or 20.10 with DOCKER_BUILDKIT=1; no `# syntax` line, so
# nothing is fetched for the frontend): the install stages bind-mount the wheels of the
# builder stages instead of copying them in.

# --- builder: pip settings and the project's metadata ----------------------------------------
FROM python:3.11-slim-bookworm AS builder
# The package index the building machine uses, passed only where set (build.sh reads the
# machine's pip configuration): nothing here names an index.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_DEFAULT_TIMEOUT=60
# The CA bundle pip trusts. A RUN that downloads mounts the building machine's bundle over it
# when build.sh passes one (secret pip-cert: TLS through an inspecting proxy); without the
# secret the mount is skipped and the image's own bundle is used.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
WORKDIR /src
COPY pyproject.toml ./
# requirements-<name>.txt: the runtime dependencies (deps) and those of each extra.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
[open(f'requirements-{n}.txt', 'w').write(chr(10).join(r) + chr(10)) \
 for n, r in {'deps': p['dependencies'], **p['optional-dependencies']}.items()]"

# --- wheel sets, one stage each: a target builds only the ones it installs -------------------
# rasterio, numpy, scipy, shapely, orjson ship manylinux wheels (GDAL inside rasterio's), so no
# compiler and no system GDAL are needed. Each layer is rebuilt only when pyproject.toml changes.
FROM builder AS wheels-deps
RUN --mount=type=secret,id=pip-cert,target=/etc/ssl/certs/ca-certificates.crt \
    pip wheel --no-cache-dir --wheel-dir /wheels -r requirements-deps.txt \
    && cp requirements-deps.txt /wheels/requirements.txt

FROM builder AS wheels-local
RUN --mount=type=secret,id=pip-cert,target=/etc/ssl/certs/ca-certificates.crt \
    pip wheel --no-cache-dir --wheel-dir /wheels -r requirements-local.txt

# Resolved together with the runtime dependencies: alone, pip would pick versions they exclude
# (a pydantic bioimageio.core cannot use, a dateutil botocore refuses).
FROM builder AS wheels-bioimageio
RUN --mount=type=secret,id=pip-cert,target=/etc/ssl/certs/ca-certificates.crt \
    --mount=type=bind,from=wheels-deps,source=/wheels,target=/deps \
    pip wheel --no-cache-dir --find-links=/deps --wheel-dir /wheels \
        -r requirements-deps.txt -r requirements-bioimageio.txt

# The project twice: /wheels/worker is built from worker, tiling and postprocessing alone (what
# the worker image runs); /wheels/all adds models and infra (test models, bootstrap, local stack).
FROM builder AS wheels-app
COPY README.md ./
COPY worker ./worker
COPY tiling ./tiling
COPY postprocessing ./postprocessing
RUN --mount=type=secret,id=pip-cert,target=/etc/ssl/certs/ca-certificates.crt \
    pip wheel --no-cache-dir --no-deps --wheel-dir /wheels/worker . \
    && rm -rf build ./*.egg-info
COPY models ./models
COPY infra ./infra
COPY client ./client
RUN --mount=type=secret,id=pip-cert,target=/etc/ssl/certs/ca-certificates.crt \
    pip wheel --no-cache-dir --no-deps --wheel-dir /wheels/all .

# --- venv: the runtime dependencies installed, then slimmed ----------------------------------
# sarpy declares plotting, image and SIDD/CRSD libraries (matplotlib and its fonttools,
# kiwisolver, contourpy, cycler; pillow; sarkit, jbpy, lxml) that the SICD path here (sarpy's
# SICD XML model and geometry, tiling/sicd.py; pixels are read by GDAL) never imports: about
# 100 MB, removed. Also removed: the packages' own test suites, byte code (nothing writes .pyc
# at run time: PYTHONDONTWRITEBYTECODE, read-only root), type stubs, C/Cython sources and
# headers, botocore's documentation examples (examples-1.json); the shared libraries lose their
# debug and local symbols (strip --strip-unneeded, as Debian's packaging does), not their
# dynamic ones; not the libraries auditwheel vendored (*.libs: patchelf'd, strip breaks them).
# tests/container checks the SICD path and every entry point import in the image.
FROM builder AS venv
ARG SARPY_UNUSED="matplotlib fonttools kiwisolver contourpy cycler pillow sarkit jbpy lxml"
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=wheels-deps,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-index \
        --no-compile --find-links=/wheels -r /wheels/requirements.txt \
    && python -m pip --python /opt/venv/bin/python uninstall --yes $SARPY_UNUSED \
    && site=/opt/venv/lib/python3.11/site-packages \
    && find "$site" -mindepth 2 -depth -type d \( -name tests -o -name __pycache__ \) \
        -exec rm -rf {} + \
    && find "$site" -type f \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.c' \
        -o -name '*.h' -o -name '*.cpp' -o -name 'examples-1.json*' \) -delete \
    && find "$site" -type f -name '*.so' -not -path '*.libs/*' \
        -exec strip --strip-unneeded {} + \
    && /opt/venv/bin/python -c "import numpy, scipy.interpolate, scipy.optimize, scipy.stats, \
rasterio, rasterio.warp, shapely, h5py, sarpy.geometry.point_projection, boto3, aiobotocore, \
sarpy.io.complex.sicd_elements.SICD, pydantic, orjson"

# --- runtime: the slim venv, a non-root user ------------------------------------------------
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
        --home-dir /app --shell /usr/sbin/nologin modelrunner
# The venv has no pip of its own: the stages below install into it with the base image's pip
# (/usr/local/bin/python: `python` is the venv's from here on) and --python; --no-index, so
# nothing is fetched.
COPY --from=venv /opt/venv /opt/venv
WORKDIR /app

# --- emulator: moto in server mode, a stand-in for LocalStack --------------------------------
# infra/docker-compose.moto.yml swaps it in where LocalStack's image cannot be pulled.
FROM python:3.11-slim-bookworm AS emulator
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN --mount=type=bind,from=wheels-local,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/venv \
    && /usr/local/bin/python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-index \
        --find-links=/wheels /wheels/*.whl \
    && useradd --system --no-log-init --uid 10002 --no-create-home --shell /usr/sbin/nologin moto
USER 10002
EXPOSE 4566
HEALTHCHECK --interval=5s --timeout=5s --start-period=10s --retries=10 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4566/moto-api/', timeout=3)"]
CMD ["python", "-m", "moto.server", "--host", "0.0.0.0", "--port", "4566"]

# --- models: the synthetic model server (SageMaker container contract) ----------------------
FROM runtime AS models
RUN --mount=type=bind,from=wheels-app,source=/wheels/all,target=/wheels \
    /usr/local/bin/python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-index --no-deps \
        /wheels/modelrunner-*.whl \
    && python -c "import models.server, infra.bootstrap, worker.service"
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=3)"]
# Bind every interface: the server's default (127.0.0.1) is unreachable from other containers.
CMD ["python", "-m", "models", "--host", "0.0.0.0", "--port", "8080"]

# --- bioimageio: the bioimage.io runner adapter (SageMaker contract, local backend) ----------
# docker run -v /path/to/models:/models:ro -p 8080:8080 modelrunner-bioimageio \
#   --package my-model=/models/my-model.zip
FROM models AS bioimageio
USER 0:0
RUN --mount=type=bind,from=wheels-bioimageio,source=/wheels,target=/wheels \
    --mount=type=bind,from=wheels-deps,source=/wheels,target=/deps \
    /usr/local/bin/python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-index \
        --find-links=/wheels --find-links=/deps /wheels/*.whl \
    && python -c "import bioimageio.core, onnxruntime, models.bioimageio.local"
USER 10001:10001
EXPOSE 8080
ENV ORT_DISABLE_TELEMETRY=1
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=3)"]
ENTRYPOINT ["python", "-m", "models.bioimageio", "--host", "0.0.0.0", "--port", "8080"]
CMD []

# --- worker (default target): polls SQS until SIGTERM ---------------------------------------
FROM runtime AS worker
RUN --mount=type=bind,from=wheels-app,source=/wheels/worker,target=/wheels \
    /usr/local/bin/python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-index --no-deps \
        /wheels/modelrunner-*.whl \
    && python -c "import rasterio, worker.service"
USER 10001:10001
# The loop touches MODELRUNNER_HEALTH_FILE every turn; worker.health fails when it is older
# than MODELRUNNER_HEALTH_MAX_AGE_S (120 s), i.e. when the loop is stuck, not only when gone.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "worker.health"]
# SIGTERM: finish or release the work in hand within MODELRUNNER_GRACE_PERIOD_S, exit 0.
# Give the container more than that before SIGKILL (compose stop_grace_period, k8s
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "worker"]
