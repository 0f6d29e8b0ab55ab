# One image for every fireman process in docker-compose.yml: collector, sink, scorer, monitor,
# dashboard, generator and trainer (`fireman <command>`), the MLflow server (mlflow/start-server.sh)
# and the Airflow components (infra/docker/airflow.sh), since MLflow and Airflow are dependencies of
# the project. Versions come from requirements.lock, so the image runs what the tests ran.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG UV_VERSION=0.13.9
# The Postgres driver for the MLflow and Airflow metadata databases: psycopg2-binary's pin in
# requirements.lock (a dependency of the project), which this must equal.
ARG PSYCOPG2_VERSION=2.9.13

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    FIREMAN_HOME=/var/lib/fireman \
    FIREMAN_PROJECT_ROOT=/opt/fireman

# A named volume starts as a copy of the image's directory, owner included; a mount point the image
# lacks is created by root, and the fireman user (uid 10001) cannot write it. So every volume the
# project image mounts is made here (test_compose_stack checks the list).
RUN pip install "uv==${UV_VERSION}" \
 && useradd --create-home --uid 10001 fireman \
 && mkdir -p /var/lib/fireman /var/lib/mlflow /var/lib/airflow/logs /home/fireman/.cache/fireman \
 && chown -R fireman:fireman /var/lib/fireman /var/lib/mlflow /var/lib/airflow /home/fireman/.cache/fireman

WORKDIR /opt/fireman

# Dependencies first (a layer that only changes with the lock file), then the project itself.
COPY pyproject.toml requirements.lock ./
# One image for every service, Airflow included: the `airflow` extra.
RUN uv pip install --system --no-cache -c requirements.lock -r pyproject.toml --extra airflow "psycopg2-binary==${PSYCOPG2_VERSION}"

COPY . .
# Editable, so the image keeps the repository layout: dags/, mlflow/ and the dashboard's static files.
RUN uv pip install --system --no-cache --no-deps -e . \
 && chmod 0755 mlflow/start-server.sh infra/docker/airflow.sh

USER fireman
ENTRYPOINT ["fireman"]
CMD ["--help"]
