#!/bin/sh
# deploy/offline: for trials on hosts without Docker Hub only (docs/deploy.md).
set -e
mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  su postgres -s /bin/sh -c "initdb -E UTF8 --locale=C.UTF-8 -D '$PGDATA' --auth-local=trust --auth-host=scram-sha-256" >/dev/null
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  su postgres -s /bin/sh -c "pg_ctl -D '$PGDATA' -w -o '-c listen_addresses=' start" >/dev/null
  su postgres -s /bin/sh -c "psql -q -c \"CREATE USER \\\"$POSTGRES_USER\\\" PASSWORD '$POSTGRES_PASSWORD'\""
  su postgres -s /bin/sh -c "createdb -O '$POSTGRES_USER' '$POSTGRES_DB'"
  su postgres -s /bin/sh -c "pg_ctl -D '$PGDATA' -w stop" >/dev/null
fi
exec su postgres -s /bin/sh -c "exec postgres -D '$PGDATA'"
