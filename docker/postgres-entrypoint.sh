#!/bin/sh
# Entrypoint of docker/Dockerfile.postgres: initialise an empty data volume once (superuser and
# password from POSTGRES_USER/POSTGRES_PASSWORD, database POSTGRES_DB, then the *.sql files of
# /docker-entrypoint-initdb.d), then run the server on POSTGRES_LISTEN (default 127.0.0.1).
set -eu
BIN=/usr/lib/postgresql/15/bin
: "${POSTGRES_USER:?set POSTGRES_USER}" "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
SOCK=/var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  "$BIN/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 \
    --auth-local=trust --auth-host=scram-sha-256 > /dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=$SOCK" -w start > /dev/null
  psql -h "$SOCK" -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q \
    -c "CREATE DATABASE \"${POSTGRES_DB:-$POSTGRES_USER}\""
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -f "$f" ] && psql -h "$SOCK" -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q -f "$f"
  done
  "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop > /dev/null
  echo "postgres: initialised $PGDATA"
fi
exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses="${POSTGRES_LISTEN:-127.0.0.1}" \
  -c unix_socket_directories="$SOCK"
