# Sourced by demo.sh --private: a registry that asks for credentials (htpasswd, Basic auth over
# plain HTTP on loopback) on $KILN_PRIVATE_REGISTRY, a password made once and kept 0600 under
# $KILN_STATE/private, and the Node.js base image copied into it. Sets private_dir.
KILN_PRIVATE_REGISTRY=${KILN_PRIVATE_REGISTRY:-127.0.0.1:5001}
private_dir="$KILN_STATE/private"
mkdir -p "$private_dir/data"
chmod 700 "$private_dir"
if [ ! -s "$private_dir/password" ]; then
  (umask 077; head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$private_dir/password")
fi
# htpasswd reads the password from stdin (-i): never on a command line.
htpasswd -iBc "$private_dir/htpasswd" kiln < "$private_dir/password" 2>/dev/null
(umask 077; printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$KILN_PRIVATE_REGISTRY" "$(printf 'kiln:%s' "$(cat "$private_dir/password")" | base64 -w0)" > "$private_dir/auth.json")
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$KILN_PRIVATE_REGISTRY/v2/" || true)
if [ "$code" != 401 ]; then
  [ "$code" = 000 ] || die "$KILN_PRIVATE_REGISTRY answers without asking for credentials (HTTP $code): stop it or set KILN_PRIVATE_REGISTRY"
  cat > "$private_dir/config.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $private_dir/data
http:
  addr: $KILN_PRIVATE_REGISTRY
auth:
  htpasswd:
    realm: kiln-demo
    path: $private_dir/htpasswd
CONF
  say "starting a registry with credentials on $KILN_PRIVATE_REGISTRY (data: $private_dir/data)"
  nohup docker-registry serve "$private_dir/config.yml" > "$private_dir/registry.log" 2>&1 &
  echo $! > "$private_dir/pid"
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$KILN_PRIVATE_REGISTRY/v2/" || true)" = 401 ] && break
    sleep 0.1
  done
fi
say "copying the base image into the private registry"
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false --dest-authfile "$private_dir/auth.json" \
  "docker://$KILN_REGISTRY/kiln/node:20-slim" "docker://$KILN_PRIVATE_REGISTRY/kiln/node:20-slim"
