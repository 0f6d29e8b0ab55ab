#!/usr/bin/env bash
# Starts the MLflow tracking server: SQLite backend store, local artifact root, loopback only.
# `fireman services start` runs this with the variables below set from FIREMAN_MLFLOW_* settings;
# the Docker image runs it with a Postgres URI instead.
set -euo pipefail
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. sqlite:////abs/path/mlflow.db}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION to a directory}"
# The job runner (three huey worker processes) serves GenAI evaluation jobs, which fireman does not
# use; leaving it off saves three processes and ~700 MB on a 2-core machine.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
exec "${PYTHON:-python3}" -m mlflow server \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --serve-artifacts \
  --host "${MLFLOW_HOST:-127.0.0.1}" \
  --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-2}"
