# Aixiate API image.
#
#   docker build -t aixiate .
#   docker compose up --build        (api + postgres + redis, see docker-compose.yml)
#
# Stage 1 builds a self-contained virtual environment with uv: third-party dependencies
# first (cached until uv.lock or a pyproject.toml changes), then the workspace members as
# real wheels (--no-editable), so the runtime needs no source tree. The aixiate-api wheel
# carries the Alembic migrations as aixiate_api/_alembic.
# Stage 2 is a plain python:3.13-slim with that venv and a non-root user.

ARG PYTHON_IMAGE=python:3.13-slim

# --------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

# uv comes from PyPI (the only package index build machines reach besides Debian).
# A minimum, not an exact pin: pass --build-arg UV_SPEC="uv==X.Y.Z" to freeze it.
ARG UV_SPEC="uv>=0.9"
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore "${UV_SPEC}"

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_NO_CACHE=1

WORKDIR /app

# Layer 1: dependencies only. uv needs the workspace root and every member's
# pyproject.toml to resolve the workspace against uv.lock; no sources yet.
COPY pyproject.toml uv.lock .python-version ./
COPY packages/aixiate-core/pyproject.toml packages/aixiate-core/
COPY packages/aixiate-audit/pyproject.toml packages/aixiate-audit/
COPY packages/aixiate-users/pyproject.toml packages/aixiate-users/
COPY packages/aixiate-auth/pyproject.toml packages/aixiate-auth/
COPY services/api/pyproject.toml services/api/
RUN uv sync --locked --no-dev --no-editable --package aixiate-api --no-install-workspace

# Layer 2: the workspace members themselves, built and installed as wheels.
# alembic/ is needed here: the aixiate-api wheel force-includes ../../alembic.
COPY packages/ packages/
COPY services/ services/
COPY alembic/ alembic/
RUN uv sync --locked --no-dev --no-editable --package aixiate-api

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH="/app/.venv/bin:${PATH}" \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AIXIATE_WORKERS=2

RUN groupadd --system --gid 10001 aixiate \
    && useradd --system --uid 10001 --gid aixiate --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin aixiate \
    && mkdir -p /app \
    && chown aixiate:aixiate /app

# The venv stays root-owned: the service cannot modify its own code.
COPY --from=builder /app/.venv /app/.venv

WORKDIR /app
USER 10001:10001

EXPOSE 8000

# slim has no curl; urlopen raises on any non-2xx answer, so 503 means unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4).status == 200 else 1)"]

# Apply migrations, then replace the shell with uvicorn so it receives SIGTERM directly.
# Workers: AIXIATE_WORKERS (default 2). Running several replicas? Run `aixiate db upgrade`
# once as a separate step and override this command with `aixiate serve ...`.
CMD ["sh", "-c", "aixiate db upgrade && exec aixiate serve --host 0.0.0.0 --port 8000 --workers \"${AIXIATE_WORKERS:-2}\""]
