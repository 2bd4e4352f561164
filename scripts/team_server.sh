#!/usr/bin/env bash
# A team's MLflow tracking server: PostgreSQL for runs and the model registry, an S3-compatible
# store (S3, MinIO, ...) for artifacts, and MLflow's basic auth. rlvf needs nothing from it but
# MLFLOW_TRACKING_URI (+ MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD): the server proxies
# artifacts to the bucket, so only the server holds the bucket's credentials.
#
#   scripts/team_server.sh serve         run `mlflow server --app-name basic-auth` (foreground)
#   scripts/team_server.sh services DIR  start a throwaway PostgreSQL and an S3 stand-in (moto) in
#                                        DIR and print the `export` lines `serve` needs
#   scripts/team_server.sh stop DIR      stop what `services DIR` started
#
# `serve` reads (defaults in brackets):
#   RLVF_SERVER_DB             backend store, postgresql+psycopg2://USER[:PW]@HOST:PORT/DB
#                              (required; SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3)
#   RLVF_SERVER_AUTH_DB        users and permissions, a second database (required; the auth
#                              tables keep their own schema version, so not the backend's DB)
#   RLVF_SERVER_ARTIFACTS      s3://BUCKET[/PREFIX] (required)
#   MLFLOW_S3_ENDPOINT_URL     the S3 endpoint for MinIO or another S3-compatible store
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   the bucket's credentials
#   MLFLOW_AUTH_ADMIN_USERNAME [admin]; MLFLOW_AUTH_ADMIN_PASSWORD (>= 12 characters) is
#                              required on the first start, when the admin user is created
#   MLFLOW_FLASK_SERVER_SECRET_KEY  the auth forms' CSRF key [random per start]; set one
#                              value when several servers sit behind one address
#   RLVF_SERVER_DEFAULT_PERMISSION  what users get on others' experiments [READ]
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  MLflow's GenAI job runner [false]
#   RLVF_SERVER_AUTH_CACHE_S   seconds a checked password stays valid in a worker [60]: MLflow
#                              checks it (PBKDF2, slow by design) on every request otherwise, and
#                              an rlvf run makes hundreds; 0 turns the cache off, so a changed
#                              password takes effect at once on every worker
#   RLVF_SERVER_HOST [127.0.0.1], RLVF_SERVER_PORT [5000], RLVF_SERVER_WORKERS [2]
#   RLVF_SERVER_ALLOWED_HOSTS  Host headers to accept when serving beyond localhost
#                              (MLflow's --allowed-hosts, e.g. "mlflow.lab.example:5000")
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# PostgreSQL refuses to run as root: as root, run it as an unprivileged user.
pg_user() {
  if [ "$(id -u)" != 0 ]; then return; fi
  if id -u nobody >/dev/null 2>&1; then echo nobody; return; fi
  id -u rlvf-postgres >/dev/null 2>&1 || useradd --system --no-create-home rlvf-postgres
  echo rlvf-postgres
}

as_pg() {
  local u
  u=$(pg_user)
  if [ -n "$u" ]; then runuser -u "$u" -- "$@"; else "$@"; fi
}

serve() {
  : "${RLVF_SERVER_DB:?set RLVF_SERVER_DB=postgresql+psycopg2://USER@HOST:PORT/DB}"
  : "${RLVF_SERVER_AUTH_DB:?set RLVF_SERVER_AUTH_DB=postgresql+psycopg2://USER@HOST:PORT/AUTH_DB}"
  : "${RLVF_SERVER_ARTIFACTS:?set RLVF_SERVER_ARTIFACTS=s3://BUCKET}"
  AUTH_INI=$(mktemp "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")
  trap 'rm -f "$AUTH_INI"' EXIT
  cat >"$AUTH_INI" <<EOF
[mlflow]
default_permission = ${RLVF_SERVER_DEFAULT_PERMISSION:-READ}
database_uri = ${RLVF_SERVER_AUTH_DB}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${RLVF_SERVER_AUTH_CACHE_S:-60}
EOF
  # CSRF key of the auth app's forms: shared by the workers; set it to share it across servers
  if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    export MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
  # MLflow's job runner (GenAI scorers, trace roll-ups; seven huey processes) is not used by rlvf
  export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
  local extra=()
  if [ -n "${RLVF_SERVER_ALLOWED_HOSTS:-}" ]; then extra+=(--allowed-hosts "$RLVF_SERVER_ALLOWED_HOSTS"); fi
  MLFLOW_AUTH_CONFIG_PATH="$AUTH_INI" python3 -m mlflow server --app-name basic-auth \
    --host "${RLVF_SERVER_HOST:-127.0.0.1}" --port "${RLVF_SERVER_PORT:-5000}" \
    --workers "${RLVF_SERVER_WORKERS:-2}" \
    --backend-store-uri "$RLVF_SERVER_DB" \
    --artifacts-destination "$RLVF_SERVER_ARTIFACTS" "${extra[@]}" &
  SERVER_PID=$!
  # the server reads the auth file as its workers start: it goes when the server does
  trap 'kill -TERM "$SERVER_PID" 2>/dev/null || true' INT TERM
  local rc=0
  wait "$SERVER_PID" || rc=$?
  if kill -0 "$SERVER_PID" 2>/dev/null; then wait "$SERVER_PID" || rc=$?; fi
  return "$rc"
}

services() {
  local dir=${1:?usage: team_server.sh services DIR}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  command -v initdb >/dev/null && command -v pg_ctl >/dev/null || die "PostgreSQL's initdb and pg_ctl are not on PATH"
  python3 -c 'import moto.server' 2>/dev/null || die "moto[server] is not installed (pip install 'moto[server]')"
  # The data directory lives where the PostgreSQL user can reach it (DIR may be private).
  local pgdata pgport s3port
  pgdata=$(mktemp -d "${TMPDIR:-/tmp}/rlvf-pg.XXXXXX")
  chmod 755 "$pgdata"
  [ -z "$(pg_user)" ] || chown "$(pg_user)" "$pgdata"
  echo "$pgdata" >"$dir/pgdata"
  as_pg initdb -D "$pgdata/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -1 "$dir/initdb.log")"
  pgport=$(free_port)
  as_pg pg_ctl -D "$pgdata/data" -l "$pgdata/postgres.log" -w -t 60 \
    -o "-p $pgport -h 127.0.0.1 -k $pgdata -c fsync=off" start >/dev/null ||
    die "PostgreSQL did not start: $(tail -1 "$pgdata/postgres.log")"
  for db in mlflow mlflow_auth; do
    psql -q -h 127.0.0.1 -p "$pgport" -U postgres -c "CREATE DATABASE $db" >/dev/null
  done
  s3port=$(free_port)
  nohup python3 -m moto.server -H 127.0.0.1 -p "$s3port" >"$dir/moto.log" 2>&1 &
  echo $! >"$dir/moto.pid"
  for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$s3port/moto-api/" && break
    sleep 0.1
  done
  curl -sf -o /dev/null -X PUT "http://127.0.0.1:$s3port/mlflow-artifacts" || die "the S3 stand-in did not start"
  cat <<EOF
export RLVF_TEST_PG_URI=postgresql://postgres@127.0.0.1:$pgport
export RLVF_TEST_S3_ENDPOINT=http://127.0.0.1:$s3port
export RLVF_SERVER_DB=postgresql+psycopg2://postgres@127.0.0.1:$pgport/mlflow
export RLVF_SERVER_AUTH_DB=postgresql+psycopg2://postgres@127.0.0.1:$pgport/mlflow_auth
export RLVF_SERVER_ARTIFACTS=s3://mlflow-artifacts
export MLFLOW_S3_ENDPOINT_URL=http://127.0.0.1:$s3port
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
EOF
}

stop() {
  local dir=${1:?usage: team_server.sh stop DIR}
  if [ -f "$dir/moto.pid" ]; then
    kill "$(cat "$dir/moto.pid")" 2>/dev/null || true
    rm -f "$dir/moto.pid"
  fi
  if [ -f "$dir/pgdata" ]; then
    local pgdata
    pgdata=$(cat "$dir/pgdata")
    as_pg pg_ctl -D "$pgdata/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$pgdata" "$dir/pgdata"
  fi
}

case "${1:-}" in
  serve) serve ;;
  services) services "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
