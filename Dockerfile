# syntax=docker/dockerfile:1
# Multi-stage: dependencies are built in a throw-away stage; the final image holds only the
# virtual environment, no compilers, no pip caches, and runs as a non-root user.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, so that a code change does not reinstall TensorFlow (pyproject.toml picks
# tensorflow-cpu on x86_64, tensorflow on aarch64: the image builds on both).
COPY pyproject.toml README.md ./
RUN mkdir forecast_core training app forecast_client \
    && touch forecast_core/__init__.py training/__init__.py app/__init__.py \
        forecast_client/__init__.py \
    && pip install . \
    && pip uninstall --yes lstm-forecast-service
COPY forecast_core ./forecast_core
COPY training ./training
COPY app ./app
COPY forecast_client ./forecast_client
RUN pip install --no-deps . \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    FORECAST_MODEL_DIR=/models \
    FORECAST_DATA_DIR=/data \
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT=8000
RUN groupadd --system --gid 10001 forecast \
    && useradd --system --uid 10001 --gid forecast --no-create-home forecast \
    && mkdir /models /data \
    && chown forecast:forecast /models /data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('UVICORN_PORT', '8000'), timeout=2)"]
# uvicorn reads UVICORN_HOST, UVICORN_PORT, UVICORN_WORKERS, ... from the environment; app.serve
# adds a worker per core for the shared stores and the WebSocket settings (app/serve.py).
CMD ["python", "-m", "app.serve"]
