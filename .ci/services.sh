#!/usr/bin/env bash
# Install and start the servers and tools the test suite uses: PostgreSQL (127.0.0.1:5432,
# trust auth, database `test`) and headless Chromium for the dashboard test.
set -euo pipefail

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq >/dev/null
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "services: installing postgresql"
    apt_install postgresql
fi
if ! pg_ready; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    if ! pg_lsclusters -h 2>/dev/null | grep -q " main "; then
        pg_createcluster "$version" main >/dev/null
    fi
    conf=/etc/postgresql/$version/main
    # trust auth on loopback only, as the test suite expects
    if ! grep -q "airdask-ci" "$conf/pg_hba.conf"; then
        sed -i '1i host all all 127.0.0.1/32 trust # airdask-ci' "$conf/pg_hba.conf"
        sed -i '1i local all all trust # airdask-ci' "$conf/pg_hba.conf"
    fi
    grep -q "^listen_addresses" "$conf/postgresql.conf" \
        || echo "listen_addresses = '127.0.0.1'" >> "$conf/postgresql.conf"
    echo "services: starting postgresql $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 60); do pg_ready && break; sleep 0.5; done
fi
pg_ready || { echo "services: postgresql did not come up" >&2; exit 1; }
if ! psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='test'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -qc "create database test"
fi

if ! command -v chromium >/dev/null 2>&1; then
    echo "services: installing chromium"
    apt_install chromium || echo "services: chromium could not be installed" >&2
fi

# Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672, guest/guest): CeleryExecutor's brokers.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 6379; then
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "services: installing redis-server"
        apt_install redis-server
    fi
    echo "services: starting redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 1 60); do port_open 6379 && break; sleep 0.5; done
fi
port_open 6379 || { echo "services: redis did not come up" >&2; exit 1; }

if ! port_open 5672; then
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        echo "services: installing rabbitmq-server"
        apt_install rabbitmq-server
    fi
    echo "services: starting rabbitmq"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 120); do port_open 5672 && break; sleep 0.5; done
fi
port_open 5672 || { echo "services: rabbitmq did not come up" >&2; exit 1; }
