#!/bin/sh
# Postgres for docker-compose: the application's role owns its database and is no superuser.
set -eu
: "${AGENTLOG_POSTGRES_PASSWORD:?AGENTLOG_POSTGRES_PASSWORD is not set: see .env}"
psql -v ON_ERROR_STOP=1 --username postgres --dbname postgres <<SQL
CREATE ROLE agentlog LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '${AGENTLOG_POSTGRES_PASSWORD}';
CREATE DATABASE agentlog OWNER agentlog;
SQL
psql -v ON_ERROR_STOP=1 --username postgres --dbname agentlog <<SQL
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO agentlog;
SQL
