#!/usr/bin/env bash
# Entry point of the Airflow containers: `airflow.sh <airflow command...>`, e.g. `airflow.sh scheduler`.
# Airflow's simple auth manager reads passwords from a file; it is written here from
# AIRFLOW_ADMIN_PASSWORD (from .env) so the login is the one the user chose, never a generated one.
set -euo pipefail
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD in .env}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?set AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"
mkdir -p "$(dirname "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")"
umask 077
python - <<'PY'
import json
import os

path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
user = os.environ.get("AIRFLOW_ADMIN_USER", "admin")
with open(path, "w") as handle:
    json.dump({user: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, handle)
PY
exec airflow "$@"
