#!/bin/sh
# Entrypoint of docker/postgres.Dockerfile: the official postgres image's first-start contract, reduced to what
# docker-compose.yml uses. On an empty PGDATA: initdb with POSTGRES_USER as superuser and POSTGRES_PASSWORD as its
# password (scram-sha-256 for every TCP client), then the database POSTGRES_DB. Then the server in the foreground.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
if [ "${1:-postgres}" != postgres ]; then
    exec "$@"  # e.g. `docker run ... examine/postgres:15 psql --version`
fi
[ $# -gt 0 ] && shift
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "docker-entrypoint: the database is uninitialized and POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    # initdb lets TCP clients in from loopback only; containers connect from the compose network.
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start >/dev/null
        # (psql expands :"db" as a quoted identifier in its input, not in -c)
        echo 'CREATE DATABASE :"db";' | psql -X -q -v ON_ERROR_STOP=1 -h /tmp -U "$user" -d postgres -v db="$db"
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
    echo "docker-entrypoint: initialized $PGDATA (superuser $user, database $db)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
