#!/bin/sh
# ClickHouse for docker-compose: the SQL box's read-only analyst, with the limits of a settings profile.
set -eu
: "${CLICKHOUSE_ANALYST_PASSWORD:?CLICKHOUSE_ANALYST_PASSWORD is not set: see .env}"
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE SETTINGS PROFILE IF NOT EXISTS agentlog_analyst SETTINGS readonly = 1, max_execution_time = 30,
    max_memory_usage = 1073741824, max_result_rows = 10000, max_result_bytes = 67108864,
    result_overflow_mode = 'throw';
CREATE USER IF NOT EXISTS analyst IDENTIFIED WITH sha256_password BY '${CLICKHOUSE_ANALYST_PASSWORD}'
    SETTINGS PROFILE 'agentlog_analyst';
GRANT SELECT ON default.* TO analyst;
SQL
