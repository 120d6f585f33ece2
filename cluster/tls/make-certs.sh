#!/usr/bin/env bash
# Make a private CA and certificates for mutual TLS between the Dask scheduler, the workers and
# the clients (the airdask scheduler, notebooks): all with SANs localhost and 127.0.0.1, plus
# any extra names given with --san, usable as server and as client (Dask workers are both).
#
#   cluster/tls/make-certs.sh [--days N] [--san DNS:host.example] [--force] OUTDIR
#
# OUTDIR gets ca.pem (the CA certificate), ca-key.pem, and <role>.pem + <role>-key.pem for
# role in scheduler, worker, client. Private keys are mode 600. Existing files are kept unless
# --force is given.
set -euo pipefail

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

days=365
force=0
sans=("DNS:localhost" "IP:127.0.0.1")
outdir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --days) days="${2:?--days needs a number}"; shift 2 ;;
        --san) sans+=("${2:?--san needs a value such as DNS:host or IP:10.0.0.5}"); shift 2 ;;
        --force) force=1; shift ;;
        -h|--help) usage 0 ;;
        -*) echo "make-certs: unknown option $1" >&2; usage 2 >&2 ;;
        *) [ -z "$outdir" ] || { echo "make-certs: one OUTDIR only" >&2; exit 2; }
           outdir="$1"; shift ;;
    esac
done
[ -n "$outdir" ] || { echo "make-certs: OUTDIR is required" >&2; usage 2 >&2; }
case "$days" in ''|*[!0-9]*) echo "make-certs: --days must be a positive integer" >&2; exit 2 ;; esac
command -v openssl >/dev/null || { echo "make-certs: openssl not found" >&2; exit 1; }

mkdir -p "$outdir"
if [ -e "$outdir/ca.pem" ] && [ "$force" = 0 ]; then
    echo "make-certs: $outdir/ca.pem exists; keeping the certificates (use --force to remake)"
    exit 0
fi
umask 077
san_list=$(IFS=,; echo "${sans[*]}")

openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -sha256 \
    -keyout "$outdir/ca-key.pem" -out "$outdir/ca.pem" \
    -subj "/CN=airdask local CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

ext=$(mktemp)
trap 'rm -f "$ext" "$outdir"/*.csr "$outdir"/ca.srl' EXIT
cat > "$ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san_list
EXT

for role in scheduler worker client; do
    openssl req -newkey rsa:2048 -nodes -sha256 \
        -keyout "$outdir/$role-key.pem" -out "$outdir/$role.csr" \
        -subj "/CN=airdask-$role" 2>/dev/null
    openssl x509 -req -in "$outdir/$role.csr" -CA "$outdir/ca.pem" -CAkey "$outdir/ca-key.pem" \
        -CAcreateserial -days "$days" -sha256 -extfile "$ext" \
        -out "$outdir/$role.pem" 2>/dev/null
done
chmod 644 "$outdir"/ca.pem "$outdir"/scheduler.pem "$outdir"/worker.pem "$outdir"/client.pem
echo "make-certs: CA and scheduler/worker/client certificates in $outdir (SAN $san_list)"
