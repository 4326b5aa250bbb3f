#!/usr/bin/env bash
# Start the shared MLflow tracking server of a condsearch cluster: runs and metrics in PostgreSQL,
# trial weights and plots served by the same server (--serve-artifacts), so `condsearch pareto`
# and `condsearch export` work from any machine that reaches it.
#
# One-time database setup (as the PostgreSQL superuser):
#   createuser -P condsearch
#   createdb -O condsearch mlflow        # MLflow's runs, metrics, tags
#   createdb -O condsearch optuna        # the Optuna studies (condsearch search --storage ...)
#
# Then, on the server host (SQLAlchemy 2.1 reads postgresql:// URLs with psycopg 3, 2.0 with
# psycopg2; condsearch's `postgres` extra installs both, see deploy/README.md):
#   pip install "mlflow>=3.5,<4" "psycopg[binary]>=3.1" "psycopg2-binary>=2.9"
#   DB_URL=postgresql://condsearch:PASSWORD@DB_HOST:5432/mlflow ARTIFACTS=/srv/mlflow-artifacts \
#     bash deploy/mlflow-server.sh
#
# Searches then log with:
#   condsearch search SPACE.yaml --backend ray --tracking-uri http://THIS_HOST:5000 \
#     --storage postgresql://condsearch:PASSWORD@DB_HOST:5432/optuna
set -euo pipefail
: "${DB_URL:?set DB_URL to the PostgreSQL URL of the MLflow database}"
ARTIFACTS="${ARTIFACTS:-/srv/mlflow-artifacts}"   # or s3://bucket/prefix, gs://..., etc.
HOST="${HOST:-0.0.0.0}"
PORT="${PORT:-5000}"
mkdir -p "$ARTIFACTS" 2>/dev/null || true
exec mlflow server \
  --backend-store-uri "$DB_URL" \
  --artifacts-destination "$ARTIFACTS" \
  --serve-artifacts \
  --host "$HOST" --port "$PORT" \
  --workers "${WORKERS:-4}"
