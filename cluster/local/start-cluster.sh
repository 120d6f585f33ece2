#!/usr/bin/env bash
# Start a Dask cluster on this machine for airdask: a `dask scheduler` (with the airdask
# dashboard page preloaded) and N workers started through `airdask dask worker`, so each worker
# offers the pools table of the configured metadata DB as Dask resources.
#
#   cluster/local/start-cluster.sh [options]
#
#   --workers N             worker processes (default 2)
#   --nthreads N            threads per worker (default 1)
#   --host HOST             interface to listen on (default 127.0.0.1)
#   --port PORT             scheduler port (default 8786; 0 = any free port)
#   --dashboard-address A   scheduler dashboard (default 127.0.0.1:8787; 127.0.0.1:0 = any)
#   --state-dir DIR         pid files, logs, scheduler file (default $AIRDASK_HOME/cluster)
#   --resources R           extra worker resources NAME=N,... (added to the pools table)
#   --tls CERTDIR           mutual TLS with certificates from cluster/tls/make-certs.sh
#   --timeout SECONDS       how long to wait for the scheduler and the workers (default 60)
#
# On success it writes DIR/cluster.env (source it: AIRDASK__DASK__CLUSTER_ADDRESS and, with
# --tls, AIRDASK__DASK__TLS_*), prints the scheduler address and dashboard link, and exits 0.
# On failure it stops what it started and prints the failing log. Stop with stop-cluster.sh.
set -euo pipefail

die() { echo "start-cluster: $*" >&2; exit 1; }
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
positive_int() { case "$2" in ''|*[!0-9]*) die "$1 must be a non-negative integer, got '$2'" ;; esac; }

workers=2
nthreads=1
host=127.0.0.1
port=8786
dashboard=127.0.0.1:8787
state_dir="${AIRDASK_HOME:-$HOME/airdask}/cluster"
resources=""
tls_dir=""
timeout=60
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) workers="${2:-}"; positive_int --workers "$workers"; shift 2 ;;
        --nthreads) nthreads="${2:-}"; positive_int --nthreads "$nthreads"; shift 2 ;;
        --host) host="${2:?--host needs a value}"; shift 2 ;;
        --port) port="${2:-}"; positive_int --port "$port"; shift 2 ;;
        --dashboard-address) dashboard="${2:?--dashboard-address needs a value}"; shift 2 ;;
        --state-dir) state_dir="${2:?--state-dir needs a value}"; shift 2 ;;
        --resources) resources="${2:?--resources needs NAME=N,...}"; shift 2 ;;
        --tls) tls_dir="${2:?--tls needs the folder of make-certs.sh}"; shift 2 ;;
        --timeout) timeout="${2:-}"; positive_int --timeout "$timeout"; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "start-cluster: unknown option '$1'" >&2; usage 2 >&2 ;;
    esac
done
[ "$nthreads" -ge 1 ] || die "--nthreads must be at least 1"
command -v dask >/dev/null || die "'dask' not found on PATH (pip install distributed)"
command -v airdask >/dev/null || die "'airdask' not found on PATH (pip install airdask)"

mkdir -p "$state_dir/pids" "$state_dir/logs"
state_dir=$(cd "$state_dir" && pwd)
for pidfile in "$state_dir"/pids/*.pid; do
    [ -e "$pidfile" ] || continue
    if kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        die "a cluster is already running from $state_dir (stop it with stop-cluster.sh --state-dir $state_dir)"
    fi
    rm -f "$pidfile"
done
rm -f "$state_dir/scheduler.json" "$state_dir/cluster.env" "$state_dir"/logs/*.log

protocol=tcp
scheduler_tls=()
worker_env=()
if [ -n "$tls_dir" ]; then
    for f in ca.pem scheduler.pem scheduler-key.pem worker.pem worker-key.pem client.pem client-key.pem; do
        [ -r "$tls_dir/$f" ] || die "--tls $tls_dir: $f missing (run cluster/tls/make-certs.sh $tls_dir)"
    done
    tls_dir=$(cd "$tls_dir" && pwd)
    protocol=tls
    scheduler_tls=(--protocol tls --tls-ca-file "$tls_dir/ca.pem"
                   --tls-cert "$tls_dir/scheduler.pem" --tls-key "$tls_dir/scheduler-key.pem")
    # `airdask dask worker` takes its TLS files from [dask] tls_*.
    worker_env=(AIRDASK__DASK__TLS_CA="$tls_dir/ca.pem" AIRDASK__DASK__TLS_CERT="$tls_dir/worker.pem"
                AIRDASK__DASK__TLS_KEY="$tls_dir/worker-key.pem")
fi

started=()
cleanup_on_failure() {
    local status=$?
    if [ "$status" != 0 ] && [ "${#started[@]}" -gt 0 ]; then
        echo "start-cluster: stopping what was started" >&2
        "$(dirname "$0")/stop-cluster.sh" --state-dir "$state_dir" --quiet || true
    fi
}
trap cleanup_on_failure EXIT

# Each process leads its own session (setsid), so stop-cluster.sh can end it together with
# its children (the nanny's worker process) by process group.
launch() {
    local name=$1; shift
    setsid "$@" >"$state_dir/logs/$name.log" 2>&1 < /dev/null &
    echo $! > "$state_dir/pids/$name.pid"
    started+=("$name")
}

fail_with_log() {
    echo "start-cluster: $1; last lines of $2:" >&2
    tail -n 30 "$2" >&2 || true
    exit 1
}

launch scheduler dask scheduler --host "$host" --port "$port" \
    --dashboard-address "$dashboard" --scheduler-file "$state_dir/scheduler.json" \
    --preload airdask.dashboard.preload "${scheduler_tls[@]}"

deadline=$((SECONDS + timeout))
until [ -s "$state_dir/scheduler.json" ] && grep -q '"address"' "$state_dir/scheduler.json"; do
    kill -0 "$(cat "$state_dir/pids/scheduler.pid")" 2>/dev/null \
        || fail_with_log "the scheduler exited" "$state_dir/logs/scheduler.log"
    [ "$SECONDS" -lt "$deadline" ] \
        || fail_with_log "no scheduler file after ${timeout}s" "$state_dir/logs/scheduler.log"
    sleep 0.1
done
address=$(grep -o '"address": *"[^"]*"' "$state_dir/scheduler.json" | head -n 1 | sed 's/.*: *"\(.*\)"/\1/')
dashboard_port=$(grep -o '"dashboard": *[0-9]*' "$state_dir/scheduler.json" | grep -o '[0-9]*$' || true)
case "$address" in "$protocol://"*) ;; *) die "unexpected scheduler address '$address'" ;; esac

worker_args=(--nthreads "$nthreads" --nworkers 1 --dashboard-address "$host:0" --host "$host")
[ -z "$resources" ] || worker_args+=(--resources "$resources")
for i in $(seq 1 "$workers"); do
    # INFO logging: the "Registered to:" line below is how this script knows a worker is up.
    launch "worker-$i" env "${worker_env[@]}" DASK_DISTRIBUTED__LOGGING__DISTRIBUTED=info \
        airdask dask worker "$address" \
        --name "worker-$i" "${worker_args[@]}"
done

for i in $(seq 1 "$workers"); do
    log="$state_dir/logs/worker-$i.log"
    until grep -q "Registered to:" "$log" 2>/dev/null; do
        kill -0 "$(cat "$state_dir/pids/worker-$i.pid")" 2>/dev/null \
            || fail_with_log "worker-$i exited" "$log"
        [ "$SECONDS" -lt "$deadline" ] || fail_with_log "worker-$i not registered after ${timeout}s" "$log"
        sleep 0.1
    done
done

dashboard_host=$host
[ "$dashboard_host" != "0.0.0.0" ] || dashboard_host=127.0.0.1
{
    echo "# written by cluster/local/start-cluster.sh; source it to point airdask at this cluster"
    echo "export AIRDASK__DASK__CLUSTER_ADDRESS=$address"
    if [ -n "$tls_dir" ]; then
        echo "export AIRDASK__DASK__TLS_CA=$tls_dir/ca.pem"
        echo "export AIRDASK__DASK__TLS_CERT=$tls_dir/client.pem"
        echo "export AIRDASK__DASK__TLS_KEY=$tls_dir/client-key.pem"
    fi
    echo "AIRDASK_CLUSTER_DASHBOARD=http://$dashboard_host:${dashboard_port:-8787}/status"
    echo "AIRDASK_CLUSTER_WORKERS=$workers"
} > "$state_dir/cluster.env"
trap - EXIT

echo "scheduler: $address"
echo "dashboard: http://$dashboard_host:${dashboard_port:-8787}/status (airdask page: /airdask)"
echo "workers:   $workers (logs in $state_dir/logs)"
echo "use it:    source $state_dir/cluster.env"
