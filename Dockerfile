# syntax=docker/dockerfile:1
# taskflow-link: `docker build -t taskflow-link .`, then see compose.yaml (or the README's
# "Deployment" section) for running it.
ARG PYTHON_IMAGE=python:3.11-slim

# -- build: the project's wheel, and the wheels of everything it needs ---------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY src ./src
# Every dependency is published as a binary wheel for Linux: no compiler needed. The versions
# are those the tests ran with (constraints.txt).
RUN python -m pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels \
        -c constraints.txt .

# -- runtime: the wheels installed on a slim Python, run as a user without privileges -------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The wheels are mounted from the build stage, not copied: they take no room in the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links=/wheels taskflow-link
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/taskflow taskflow
# The working directory is the user's: the default SQLite database (no
# TASKFLOW_LINK_DATABASE_URL) and a .env file would be read from here.
WORKDIR /home/taskflow
USER 10001:10001
EXPOSE 8000
# /healthz: the process answers. No curl in slim images: Python asks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["taskflow-link", "serve", "--host", "0.0.0.0"]
