#!/usr/bin/env bash
# Stop a cluster started by start-cluster.sh: the workers first, then the scheduler. Each
# process group gets SIGTERM, and SIGKILL if it is still there after --timeout seconds.
#
#   cluster/local/stop-cluster.sh [--state-dir DIR] [--timeout SECONDS] [--quiet]
#
# DIR defaults to $AIRDASK_HOME/cluster, as for start-cluster.sh. Nothing running is not an
# error. Logs stay in DIR/logs.
set -euo pipefail

state_dir="${AIRDASK_HOME:-$HOME/airdask}/cluster"
timeout=30
quiet=0
while [ $# -gt 0 ]; do
    case "$1" in
        --state-dir) state_dir="${2:?--state-dir needs a value}"; shift 2 ;;
        --timeout) timeout="${2:-}"; shift 2
                   case "$timeout" in ''|*[!0-9]*) echo "stop-cluster: --timeout must be an integer" >&2; exit 2 ;; esac ;;
        --quiet) quiet=1; shift ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "stop-cluster: unknown option '$1'" >&2; exit 2 ;;
    esac
done
say() { [ "$quiet" = 1 ] || echo "stop-cluster: $*"; }

if [ ! -d "$state_dir/pids" ]; then
    say "no cluster state in $state_dir: nothing to stop"
    exit 0
fi

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

stop_group() {  # stop_group NAME PID: TERM the group, wait, KILL what is left
    local name=$1 pid=$2 deadline=$((SECONDS + timeout))
    if ! group_alive "$pid"; then
        say "$name (pid $pid) was not running"
        return 0
    fi
    kill -TERM -- "-$pid" 2>/dev/null || true
    while group_alive "$pid"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "$name (pid $pid) still running after ${timeout}s: SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    say "stopped $name (pid $pid)"
}

stopped=0
stop_named() {  # stop_named PIDFILE...: in parallel, then wait for all of them
    local pidfile name pid
    for pidfile in "$@"; do
        [ -e "$pidfile" ] || continue
        name=$(basename "$pidfile" .pid)
        pid=$(cat "$pidfile")
        case "$pid" in ''|*[!0-9]*) say "ignoring $pidfile: not a pid"; rm -f "$pidfile"; continue ;; esac
        stop_group "$name" "$pid" &
        stopped=$((stopped + 1))
    done
    wait
    rm -f "$@"
}
# Workers first, so they do not spend the timeout reconnecting to a gone scheduler.
stop_named "$state_dir"/pids/worker-*.pid
stop_named "$state_dir"/pids/scheduler.pid
rm -f "$state_dir/scheduler.json" "$state_dir/cluster.env"
[ "$stopped" -gt 0 ] || say "no cluster running from $state_dir"
