# syntax=docker/dockerfile:1.7
# CVM scoring service. Multi-stage: build a virtualenv with the project, copy it into a slim
# runtime image that runs as a non-root user, applies migrations, then serves with uvicorn.
# The project is installed in editable mode at /srv/cvm in both stages, so the package finds
# migrations/, models/ and its resources next to itself exactly as in a checkout.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/cvm
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md constraints.txt ./
COPY app ./app
RUN pip install --upgrade pip && pip install -e . -c constraints.txt

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# libgomp1: LightGBM's OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system cvm && useradd --system --gid cvm --home-dir /srv/cvm cvm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CVM_HOST=0.0.0.0 \
    CVM_PORT=8000 \
    CVM_MODELS_DIR=/srv/cvm/models \
    CVM_DATABASE_URL=sqlite:////srv/cvm/var/cvm.db
WORKDIR /srv/cvm
COPY --from=build /opt/venv /opt/venv
COPY --from=build /srv/cvm /srv/cvm
COPY alembic.ini ./
COPY migrations ./migrations
COPY models ./models
RUN mkdir -p /srv/cvm/var && chown -R cvm:cvm /srv/cvm/var
USER cvm
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('CVM_PORT', '8000')}/healthz\", timeout=2)"]
CMD ["sh", "-c", "cvm db upgrade && exec cvm serve --workers ${CVM_WORKERS:-1}"]
