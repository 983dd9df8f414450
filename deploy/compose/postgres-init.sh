#!/bin/sh
# Runs once, on the first start of an empty data volume: the read side's role
# and the read-model database it owns, beside the event log's (POSTGRES_DB).
# `parley migrate --read-side-role` then lets the role read the event log, and
# nothing more.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v role="$POSTGRES_READ_SIDE_USER" -v password="$POSTGRES_READ_SIDE_PASSWORD" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"${POSTGRES_READ_DB}\" OWNER \"${POSTGRES_READ_SIDE_USER}\""
