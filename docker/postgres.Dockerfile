# PostgreSQL 15 from Debian's packages on a base image of your choice: a stand-in for the official postgres:15 image
# where no container registry can be reached (offline sites, `make image-test`). It follows the official image's
# interface: POSTGRES_PASSWORD (required on the first start), POSTGRES_USER (default postgres, the superuser),
# POSTGRES_DB (default: the user's name), data in /var/lib/postgresql/data (PGDATA), port 5432 (PGPORT), pg_isready
# on PATH, arguments after `postgres` passed to the server. Unlike the official image it runs as the non-root user
# `postgres` from the start (no gosu step), so the data volume must be writable by that user (a new named volume is).
#
#   docker build -f docker/postgres.Dockerfile --build-arg BASE_IMAGE=<debian 12 image> -t examine/postgres:15 docker/
#   POSTGRES_IMAGE=examine/postgres:15 docker compose up -d
#
# The base needs apt and a reachable Debian mirror (deb.debian.org or the base's own sources.list).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG PG_MAJOR=15
# No cluster is created or started by the package's scripts during the build (the entrypoint makes one on first start).
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main-cluster.conf \
    && printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 700 /var/lib/postgresql/data && chmod 2777 /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
USER postgres
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
# SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for every client to disconnect).
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
