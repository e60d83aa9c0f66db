#!/usr/bin/env bash
# Make a private CA and TLS certificates for a daskmeta Dask cluster with the openssl command.
# Same files as make_certs.py (which needs only Python and `cryptography`):
#
#   deploy/tls/make_certs.sh DIR [DAYS] [SAN]
#
#   DIR   output folder (created, mode 0700)
#   DAYS  validity in days (default 365)
#   SAN   subjectAltName list (default DNS:localhost,IP:127.0.0.1,DNS:daskmeta-scheduler);
#         Dask does not check host names, it checks that the peer's certificate is signed by
#         the CA, so these are informational.
#
# Writes ca.pem/ca-key.pem, scheduler.pem/scheduler-key.pem, worker.pem/worker-key.pem,
# client.pem/client-key.pem (keys mode 0600) and distributed.yaml (deploy/tls/distributed.yaml
# with its paths set to DIR): `export DASK_CONFIG=DIR/distributed.yaml`.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
dir=$1
days=${2:-365}
san=${3:-DNS:localhost,IP:127.0.0.1,DNS:daskmeta-scheduler}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

umask 077
mkdir -p "$dir"
chmod 700 "$dir"
dir=$(cd "$dir" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

subject() { echo "/O=daskmeta cluster/CN=$1"; }

# the certificate authority
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 \
    -days "$days" -subj "$(subject daskmeta-ca)" \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null

for role in scheduler worker client; do
    if [[ $role == client ]]; then usage=clientAuth; else usage=serverAuth,clientAuth; fi
    cat > "$work/$role.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=$usage
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 \
        -subj "$(subject "daskmeta-$role")" \
        -keyout "$dir/$role-key.pem" -out "$work/$role.csr" 2>/dev/null
    openssl x509 -req -in "$work/$role.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
        -CAcreateserial -CAserial "$work/ca.srl" -sha256 -days "$days" \
        -extfile "$work/$role.ext" -out "$dir/$role.pem" 2>/dev/null
    openssl verify -CAfile "$dir/ca.pem" "$dir/$role.pem" >/dev/null
done

chmod 600 "$dir"/*-key.pem
chmod 644 "$dir"/ca.pem "$dir"/scheduler.pem "$dir"/worker.pem "$dir"/client.pem
sed "s#/etc/daskmeta/tls/#$dir/#g" "$here/distributed.yaml" > "$dir/distributed.yaml"
chmod 644 "$dir/distributed.yaml"
echo "wrote CA, scheduler, worker and client certificates to $dir"
echo "use it with: export DASK_CONFIG=$dir/distributed.yaml"
