#!/usr/bin/env bash
# kiln's demo, on embedded defaults: sets up what is missing (packages, node modules, a local
# registry, a Node.js base image), starts kilnd, turns examples/hello-node into a git repository,
# builds it, commits a one-line change, builds it again on the warm cache (kiln's fast path: only
# the final COPY's layer is made, from the git diff), checks that the pushed image runs, and
# prints both builds' timings and digests.
#
# scripts/demo.sh --private does the same against a registry that asks for credentials (htpasswd,
# on $KILN_PRIVATE_REGISTRY, the base image copied there) with a build secret that a RUN step
# prints: the build log shows it masked, and the warm rebuild still takes the fast path.
source "$(dirname "$0")/lib.sh"
private=0
case "${1:-}" in
  "") ;;
  --private) private=1 ;;
  *) die "usage: scripts/demo.sh [--private]" ;;
esac
"$KILN_ROOT/scripts/setup.sh"
"$KILN_ROOT/scripts/base-images.sh" node
registry="$KILN_REGISTRY"
base="$KILN_REGISTRY/kiln/node:20-slim"
cred_flags=()
private_dir=""
if [ $private = 1 ]; then
  source "$KILN_ROOT/scripts/private-registry.sh"
  registry="$KILN_PRIVATE_REGISTRY"
  base="$registry/kiln/node:20-slim"
  (umask 077; printf 'npm_%s' "$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')" > "$private_dir/npm-token")
  cred_flags=(--registry-user kiln --registry-password-file "$private_dir/password" --secret "id=npm_token,src=$private_dir/npm-token")
fi

kiln() { node "$KILN_ROOT/dist/bin/kiln.js" --addr "http://127.0.0.1:$port" "$@"; }
now_ms() { date +%s%3N; }

data="$KILN_STATE/kilnd"
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
mkdir -p "$data"
say "starting kilnd on 127.0.0.1:$port (volume: $data, log: $KILN_STATE/kilnd.log)"
node "$KILN_ROOT/dist/bin/kilnd.js" --listen "127.0.0.1:$port" --data "$data" --idle-timeout 0 \
  --insecure-registry "$KILN_REGISTRY" --insecure-registry "${KILN_PRIVATE_REGISTRY:-127.0.0.1:5001}" > "$KILN_STATE/kilnd.log" 2>&1 &
kilnd_pid=$!
trap 'kill -TERM $kilnd_pid 2>/dev/null; wait $kilnd_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' -d '{}' "http://127.0.0.1:$port/kiln.v1.BuilderService/GetInfo" && break
  kill -0 $kilnd_pid 2>/dev/null || { cat "$KILN_STATE/kilnd.log"; die "kilnd exited"; }
  sleep 0.1
done

repo="$KILN_STATE/repo"
rm -rf "$repo"
cp -r "$KILN_ROOT/examples/hello-node" "$repo"
if [ $private = 1 ]; then
  # A step that needs the secret, and (to show the masking) prints it.
  sed -i 's|^COPY src/ ./src/$|RUN --mount=type=secret,id=npm_token echo "npm token in this step: $(cat /run/secrets/npm_token)"\nCOPY src/ ./src/|' "$repo/Containerfile"
fi
git -C "$repo" init -q -b main
git -C "$repo" add -A
git -C "$repo" -c user.name=demo -c user.email=demo@kiln.invalid commit -qm "hello-node"
image="$registry/demo/hello-node"

build() { # build LABEL: builds HEAD of the repository, following its log
  local sha t0 t1
  sha=$(git -C "$repo" rev-parse HEAD)
  say "$1: building $sha"
  t0=$(now_ms)
  kiln build --project hello-node --git "file://$repo" --commit "$sha" --image "$image" --build-arg "BASE=$base" "${cred_flags[@]}" --follow
  t1=$(now_ms)
  printf '%s\t%s\t%s\n' "$1" "$sha" "$((t1 - t0))" >> "$KILN_STATE/demo-times.tsv"
}

: > "$KILN_STATE/demo-times.tsv"
build "first build"
# A one-line change, different on every run, so the rebuild really rebuilds the source layer.
sed -i "s/hello, /hello again ($(date +%H:%M:%S)), /" "$repo/src/greeting.js"
git -C "$repo" -c user.name=demo -c user.email=demo@kiln.invalid commit -qam "greet again"
build "warm rebuild"

say "running the pushed image (node src/server.js --selftest)"
sha=$(git -C "$repo" rev-parse HEAD)
CONTAINERS_CONF="$data/conf/containers.conf" CONTAINERS_STORAGE_CONF="$data/conf/storage.conf" \
CONTAINERS_REGISTRIES_CONF="$data/conf/registries.conf" \
  podman run --rm --network host ${private_dir:+--authfile "$private_dir/auth.json"} "$image:$sha" node src/server.js --selftest \
  2> >(grep -v "Additional Layer Store .* during release" >&2)  # storage's notice about kiln's base layer store (README, Known limits)
if [ $private = 1 ]; then
  say "the secret's line in each build's log (kiln logs): masked"
  for id in $(kiln list --project hello-node --limit 2 | awk 'NR>1 {print $1}'); do
    log=$(kiln logs "$id" 2>/dev/null || true)
    line=$(grep -m1 '^npm token in this step' <<<"$log" || true)
    echo "build $id: ${line:-the step did not run (cache or fast path)}"
  done
  if grep -rqF "$(cat "$private_dir/npm-token")" "$data" "$KILN_STATE/kilnd.log"; then die "the secret is on the volume or in kilnd's log"; fi
  say "the secret is nowhere on the volume ($data) nor in kilnd's log"
fi

say "summary (wall time = kiln build from the commit to the pushed digest, CLI start included)"
printf '%-13s %-12s %9s %9s %7s %7s %7s  %s\n' BUILD COMMIT WALL KILND FETCH BUILD PUSH "CACHED  PATH  DIGEST"
kiln list --project hello-node --limit 2 >/dev/null
while IFS=$'\t' read -r label sha wall; do
  id=$(kiln list --project hello-node --limit 10 | awk -v c="${sha:0:12}" '$4==c {print $1; exit}')
  kiln get --json "$id" | node -e '
    let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const b=JSON.parse(s);const d=b.durations||{};
    const f=x=>x?(parseFloat(x)).toFixed(2)+"s":"-";
    const [label,wall]=process.argv.slice(1);
    console.log(`${label.padEnd(13)} ${b.commit.slice(0,12)} ${(wall/1000).toFixed(2).padStart(8)}s ${f(d.total).padStart(9)} ${f(d.fetch).padStart(7)} ${f(d.build).padStart(7)} ${f(d.push).padStart(7)}  ${b.stepsCached||0}/${b.stepsTotal||0}     ${b.firstBuild?"first":b.fastPath?"fast":"full"}  ${b.imageDigest}`)})' "$label" "$wall"
done < "$KILN_STATE/demo-times.tsv"
