#!/usr/bin/env bash
# A prototype of running the build's steps ourselves (README, "Performance": the design), measured
# side by side with buildah on the same storage, the same commit and the same machine. After
# `npm run bench` (it leaves the buildah engine's warm storage and the ts-service context in
# bench/work/), every run:
#   1. edits one source file of examples/ts-service (a new line each run);
#   2. buildah: `buildah bud --layers` of the context, as the bench's buildah engine runs it
#      (GOGC=off, --network=host), without the push: COPY src/ and the steps after it run;
#   3. the prototype: the same COPY src/ and RUN npm run build, done as kilnd would do them:
#      the parent image (buildah's cached "COPY tsconfig.json" step) mounted read-only, one
#      overlay per step (the COPY's files written into the first, the RUN run by runc on the
#      second, with the image's environment and working directory), each step's upper directory
#      tarred and gzipped as its layer; the metadata steps (ENV, EXPOSE, USER, CMD) are config
#      fields, no step at all;
#   4. the referee: the bundle the RUN made (dist/server.js) must be byte for byte the one in
#      buildah's image.
# It prints each run's times and the ratio of the medians. Not part of kiln: a measurement.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=$ROOT/bench/work
RUNS=${KILN_PROTOTYPE_RUNS:-5}
CTX=$W/buildah/ctx/ts-service
[ -f "$CTX/Containerfile" ] && [ -f "$W/buildah/storage.conf" ] || { echo "run npm run bench first (it leaves bench/work/buildah)" >&2; exit 1; }
export CONTAINERS_STORAGE_CONF=$W/buildah/storage.conf CONTAINERS_CONF=$W/buildah/containers.conf
export TMPDIR=$W/buildah/tmp
P=$(mktemp -d /tmp/kiln-own-steps.XXXXXX)
cp "$CTX/src/server.ts" "$P/server.ts.orig"
trap 'umount -q "$P"/m1 "$P"/m2 2>/dev/null || true; cp "$P/server.ts.orig" "$CTX/src/server.ts"; rm -rf "$P"' EXIT
ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: >"$P/buildah.times"
: >"$P/own.times"
for i in $(seq 1 "$RUNS"); do
  echo "// own-steps run $i $(date +%s%N)" >>"$CTX/src/server.ts"

  # buildah, the steps from COPY src/ on (the ones before it come from its cache).
  t0=$(ms)
  GOGC=off GOMEMLIMIT=2GiB buildah bud --pull=false --layers --network=host -t localhost/own-steps:buildah -- "$CTX" >"$P/bud.out" 2>&1
  t1=$(ms)
  echo $((t1 - t0)) >>"$P/buildah.times"
  # The parent of COPY src/: the image buildah took from its cache for the step before it.
  parent=$(awk '/^STEP [0-9]+\/[0-9]+: COPY tsconfig.json/ {f=1; next} f && /^--> Using cache/ {print $4; exit}' "$P/bud.out")
  [ -n "$parent" ] || { cat "$P/bud.out" >&2; echo "no cached parent for COPY src/ in buildah's output" >&2; exit 1; }

  # The prototype.
  rm -rf "${P:?}"/u1 "$P"/w1 "$P"/m1 "$P"/u2 "$P"/w2 "$P"/m2 "$P"/b
  mkdir -p "$P"/u1 "$P"/w1 "$P"/m1 "$P"/u2 "$P"/w2 "$P"/m2 "$P"/b
  t0=$(ms)
  lower=$(podman image mount "$parent")
  env_json=$(podman image inspect "$parent" --format '{{json .Config.Env}}')
  t1=$(ms)
  # COPY src/ ./src/ (WORKDIR /app; no --chown: root-owned, as buildah writes them).
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$P/u1,workdir=$P/w1" "$P/m1"
  mkdir -p "$P/m1/app/src"
  cp -a --no-preserve=ownership "$CTX/src/." "$P/m1/app/src/"
  umount "$P/m1"
  t2=$(ms)
  # RUN npm run build, on the COPY's layer over the parent's.
  mount -t overlay overlay -o "lowerdir=$P/u1:$lower,upperdir=$P/u2,workdir=$P/w2" "$P/m2"
  cat >"$P/b/config.json" <<JSON
{"ociVersion":"1.0.2","root":{"path":"$P/m2"},"hostname":"kiln",
 "process":{"args":["/bin/sh","-c","npm run build"],"cwd":"/app","env":$(echo "$env_json" | sed 's/]$/,"HOME=\/root"]/'),"user":{"uid":0,"gid":0},
  "capabilities":{"bounding":["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER","CAP_FSETID","CAP_KILL","CAP_SETGID","CAP_SETUID","CAP_NET_BIND_SERVICE"],
   "effective":["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER","CAP_FSETID","CAP_KILL","CAP_SETGID","CAP_SETUID","CAP_NET_BIND_SERVICE"],
   "permitted":["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER","CAP_FSETID","CAP_KILL","CAP_SETGID","CAP_SETUID","CAP_NET_BIND_SERVICE"]},
  "noNewPrivileges":true},
 "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
  {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},
  {"destination":"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620"]},
  {"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["nosuid","noexec","nodev","mode=1777","size=65536k"]},
  {"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]},
  {"destination":"/tmp","type":"tmpfs","source":"tmpfs","options":["nosuid","nodev","mode=1777"]}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}]}}
JSON
  runc run --bundle "$P/b" "kiln-own-steps-$$-$i" >"$P/run.out" 2>&1 || { cat "$P/run.out" >&2; exit 1; }
  t3=$(ms)
  umount "$P/m2"
  # Each step's layer: its upper directory as a gzipped tar, digested.
  for u in u1 u2; do tar --numeric-owner -C "$P/$u" -cf - . | gzip -1 >"$P/$u.tgz"; sha256sum "$P/$u.tgz" >/dev/null; done
  t4=$(ms)
  podman image unmount "$parent" >/dev/null
  echo $((t4 - t0)) >>"$P/own.times"

  # The referee: the RUN's output is buildah's.
  final=$(podman image mount localhost/own-steps:buildah)
  cmp -s "$final/app/dist/server.js" "$P/u2/app/dist/server.js" || { echo "run $i: the prototype's dist/server.js differs from buildah's" >&2; exit 1; }
  podman image unmount localhost/own-steps:buildah >/dev/null
  echo "run $i: buildah bud $(tail -1 "$P/buildah.times") ms; own steps $((t4 - t0)) ms (parent mount $((t1 - t0)), COPY $((t2 - t1)), RUN $((t3 - t2)), two layers $((t4 - t3)))"
done
b=$(median <"$P/buildah.times")
o=$(median <"$P/own.times")
echo "medians of $RUNS runs: buildah bud $b ms, own steps $o ms; own / buildah $(awk -v o="$o" -v b="$b" 'BEGIN {printf "%.2f", o / b}')"
