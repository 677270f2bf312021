# Shared by kiln's scripts: where things live and small helpers. Source it; do not run it.
set -euo pipefail
KILN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Everything the demo and the scripts make lives here (git-ignored), unless KILN_STATE says otherwise.
KILN_STATE=${KILN_STATE:-$KILN_ROOT/.kiln-demo}
KILN_REGISTRY=${KILN_REGISTRY:-127.0.0.1:5000}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The scripts' own podman configuration, for making base images (kilnd has its own).
use_script_podman() {
  local conf="$KILN_STATE/podman"
  mkdir -p "$conf"
  cat > "$conf/containers.conf" <<CONF
[containers]
default_ulimits = []
[engine]
runtime = "runc"
events_logger = "none"
CONF
  cat > "$conf/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$KILN_STATE/podman/storage"
runroot = "/run/kiln-scripts"
CONF
  printf 'unqualified-search-registries = []\n[[registry]]\nlocation = "%s"\ninsecure = true\n' "$KILN_REGISTRY" > "$conf/registries.conf"
  export CONTAINERS_CONF="$conf/containers.conf" CONTAINERS_STORAGE_CONF="$conf/storage.conf" CONTAINERS_REGISTRIES_CONF="$conf/registries.conf"
}

# Does the registry hold REPO:TAG?
# The digest the local registry serves for REPO TAG (empty when it has none).
registry_digest() {
  curl -sf -I -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    "http://$KILN_REGISTRY/v2/$1/manifests/$2" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p' || true
}

registry_has() {
  curl -sf -o /dev/null -I -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    "http://$KILN_REGISTRY/v2/$1/manifests/$2"
}
