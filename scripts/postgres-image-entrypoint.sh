#!/bin/bash
# Entry point of the locally built Postgres image (see provision-test-images.sh).
# Honours POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB like the official image, and
# PGPORT (or POSTGRES_PORT) for the port, because with host networking there is no mapping.
set -euo pipefail
PORT="${PGPORT:-${POSTGRES_PORT:-5432}}"
export PGPORT="$PORT"
PGUSER_NAME="${POSTGRES_USER:-postgres}"
PGPASS="${POSTGRES_PASSWORD:-postgres}"
PGDB="${POSTGRES_DB:-$PGUSER_NAME}"
BIN=/usr/lib/postgresql/15/bin
DATA=/var/lib/postgresql/data

mkdir -p "$DATA" /var/run/postgresql
chown -R postgres:postgres "$DATA" /var/run/postgresql
if [ ! -s "$DATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"
  printf '%s\n' "$PGPASS" > "$pwfile"
  chown postgres "$pwfile"
  runuser -u postgres -- "$BIN/initdb" -D "$DATA" -U "$PGUSER_NAME" --pwfile="$pwfile" \
    --auth-host=scram-sha-256 --auth-local=trust -E UTF8 >/dev/null
  rm -f "$pwfile"
  if [ "$PGDB" != "postgres" ]; then
    echo "CREATE DATABASE \"$PGDB\" OWNER \"$PGUSER_NAME\";" \
      | runuser -u postgres -- "$BIN/postgres" --single -D "$DATA" postgres >/dev/null
  fi
fi
exec runuser -u postgres -- "$BIN/postgres" -D "$DATA" -p "$PORT" \
  -c listen_addresses=127.0.0.1 -c unix_socket_directories=/var/run/postgresql \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200
