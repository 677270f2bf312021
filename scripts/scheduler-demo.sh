#!/usr/bin/env bash
# The scheduler walk-through, on this host with the local driver: a git repository of
# examples/hello-node, kiln-scheduler with one project, and two signed GitHub push webhooks sent
# with curl. Each wakes the project's kilnd, builds, pushes, and puts kilnd back to sleep; the
# script prints each deployment's timings from webhook received to machine asleep.
source "$(dirname "$0")/lib.sh"
"$KILN_ROOT/scripts/setup.sh"
"$KILN_ROOT/scripts/base-images.sh" node

work="$KILN_STATE/scheduler-demo"
mkdir -p "$work"
secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$secret" > "$work/webhook-secret"
repo="$work/repo"
rm -rf "$repo" && cp -r "$KILN_ROOT/examples/hello-node" "$repo"
git -C "$repo" init -q -b main && git -C "$repo" add -A
git -C "$repo" -c user.name=demo -c user.email=demo@kiln.invalid commit -qm "hello-node"
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
cat > "$work/scheduler.json" <<JSON
{
  "listen": "127.0.0.1:$port",
  "data": "state",
  "webhookSecretFile": "webhook-secret",
  "projects": [{
    "name": "hello-node",
    "git": "file://$repo",
    "github": "acme/hello-node",
    "branch": "main",
    "image": "$KILN_REGISTRY/demo/hello-node",
    "machine": { "driver": "local", "data": "$KILN_STATE/kilnd", "idleTimeout": 300, "insecureRegistries": ["$KILN_REGISTRY"] }
  }]
}
JSON
say "starting kiln-scheduler on 127.0.0.1:$port (config: $work/scheduler.json)"
node "$KILN_ROOT/dist/bin/kiln-scheduler.js" --config "$work/scheduler.json" > "$work/scheduler.log" 2>&1 &
sched=$!
trap 'kill -TERM $sched 2>/dev/null; wait $sched 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done

rpc() { curl -s -X POST -H 'Content-Type: application/json' -d "$2" "http://127.0.0.1:$port/kiln.v1.SchedulerService/$1"; }
webhook() { # webhook SHA: a signed GitHub push event, as GitHub sends it
  local body sig
  body=$(printf '{"ref":"refs/heads/main","after":"%s","deleted":false,"repository":{"full_name":"acme/hello-node"}}' "$1")
  sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.* //')
  curl -s -X POST -H 'Content-Type: application/json' -H 'X-GitHub-Event: push' -H "X-Hub-Signature-256: sha256=$sig" \
    --data-binary "$body" "http://127.0.0.1:$port/webhooks/github"
}
deploy() { # deploy LABEL: sends the webhook for HEAD and waits until the machine sleeps again
  local sha id out
  sha=$(git -C "$repo" rev-parse HEAD)
  say "$1: push webhook for $sha"
  out=$(webhook "$sha"); echo "  scheduler: $out"
  id=$(echo "$out" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).deployment))')
  for _ in $(seq 600); do
    out=$(rpc GetDeployment "{\"deploymentId\":\"$id\"}")
    echo "$out" | grep -q '"machineAsleep"' && break
    echo "$out" | grep -q 'DEPLOYMENT_STATE_FAILED' && break
    sleep 0.2
  done
  echo "$out" | node -e '
    let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const d=JSON.parse(s).deployment;const t=d.times||{};
    const r=Date.parse(t.received);const ms=x=>x?`${Date.parse(x)-r} ms`:"-";
    console.log(`  ${d.state.replace("DEPLOYMENT_STATE_","")}  ${d.image}@${d.imageDigest||"-"}  ${d.stepsCached||0}/${d.stepsTotal||0} steps cached`);
    console.log(`  webhook received → machine ready ${ms(t.machineReady)} → build started ${ms(t.buildStarted)} → digest pushed ${ms(t.digestPushed)} → machine asleep ${ms(t.machineAsleep)}; awake ${t.awake||"-"}`);
    if (d.error) console.log(`  error: ${d.error}`)})'
}

deploy "first push"
sed -i "s/hello, /hello from a webhook ($(date +%H:%M:%S)), /" "$repo/src/greeting.js"
git -C "$repo" -c user.name=demo -c user.email=demo@kiln.invalid commit -qam "greet from a webhook"
deploy "second push"
say "kilnd's log: $KILN_STATE/kilnd/kilnd.log; the scheduler's: $work/scheduler.log"
