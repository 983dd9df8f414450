#!/bin/sh
# Runs once, on the first start of an empty data volume: the read-model
# database beside the event log's (POSTGRES_DB).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"${POSTGRES_READ_DB}\" OWNER \"${POSTGRES_USER}\""
