#!/bin/sh
# A read-only role for Grafana's PostgreSQL data source (deploy/grafana): it may SELECT the
# job table's tables that the pelletseg role creates (migrations run after this script).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v reader_password="$GRAFANA_READER_PASSWORD" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'reader_password';
GRANT CONNECT ON DATABASE pelletseg TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE pelletseg IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
