#!/usr/bin/env bash
# dev-cert.sh DIR: a CA (DIR/ca.pem) and a server certificate for localhost and 127.0.0.1
# signed by it (DIR/server.pem, DIR/server-key.pem), made once with openssl. For local TLS only.
set -euo pipefail
dir=$1
[ -f "$dir/ca.pem" ] && [ -f "$dir/server.pem" ] && [ -f "$dir/server-key.pem" ] && exit 0
mkdir -p "$dir"
cd "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=twinhub local CA" \
  -keyout ca-key.pem -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server-key.pem -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
  -out server.pem -extfile server.ext 2>/dev/null
chmod 644 ca.pem
echo "[tls] made $dir/ca.pem and a server certificate for localhost, 127.0.0.1"
