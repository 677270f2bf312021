#!/usr/bin/env bash
# Starts the local registry (Debian's docker-registry, the CNCF distribution) on $KILN_REGISTRY
# with its data under $KILN_STATE/registry, unless one already answers there.
source "$(dirname "$0")/lib.sh"
if curl -sf -o /dev/null "http://$KILN_REGISTRY/v2/"; then exit 0; fi
# One starter at a time (tests run side by side): the second finds the first's registry answering.
mkdir -p "$KILN_STATE"
exec 9>"$KILN_STATE/registry.lock"
flock 9
if curl -sf -o /dev/null "http://$KILN_REGISTRY/v2/"; then exit 0; fi
dir="$KILN_STATE/registry"
mkdir -p "$dir/data"
cat > "$dir/config.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $KILN_REGISTRY
CONF
say "starting the registry on $KILN_REGISTRY (data: $dir/data)"
nohup docker-registry serve "$dir/config.yml" > "$dir/registry.log" 2>&1 9>&- &
echo $! > "$dir/pid"
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://$KILN_REGISTRY/v2/" && exit 0
  sleep 0.1
done
die "the registry did not start; see $dir/registry.log"
