// The control plane's load test: N projects (default 1,000) on R kiln-scheduler replicas
// (default 3, separate processes, dist/ as shipped) sharing one real PostgreSQL; each project
// gets a burst of pushes (several commits within a second, chained by their before links), sent
// as signed GitHub webhooks to random replicas; one replica is killed with SIGKILL half-way.
// A webhook refused by the dead replica is sent again to another with the same delivery id, as
// GitHub retries. Builders are one stand-in (bench/lib/fleet-standin.ts) for N machines.
// Reports: webhook → Build call latency p50/p99, deployments lost, built twice, superseded
// correctly, database size, each replica's CPU and peak memory. Run: npm run bench:scheduler.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHmac, randomBytes, randomUUID } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { schedulerClient } from "../src/client/kilnd.js";
import { DeploymentState } from "../src/gen/kiln/v1/scheduler_pb.js";
import { freePort } from "../src/util/net.js";
import { removeTree } from "./lib/remove-tree.js";
import { startFleetStandIn } from "./lib/fleet-standin.js";

const ROOT = new URL("..", import.meta.url).pathname;
const SECRET = "load-test-webhook-secret";
/** Each replica's log (warnings and errors), kept after the run. */
const LOGS = join(ROOT, "bench/results/scheduler-load-logs");

const { values: a } = parseArgs({
  options: {
    projects: { type: "string", default: "1000" },
    commits: { type: "string", default: "3" },
    replicas: { type: "string", default: "3" },
    "build-ms": { type: "string", default: "500" },
    seconds: { type: "string", default: "30" },
  },
});
const PROJECTS = Number(a.projects);
const COMMITS = Number(a.commits);
const REPLICAS = Number(a.replicas);
const BUILD_MS = Number(a["build-ms"]);
const SPREAD_MS = Number(a.seconds) * 1000;

const say = (s: string) => process.stderr.write(`==> ${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha = () => randomBytes(20).toString("hex");
const pct = (xs: number[], p: number) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

interface Replica {
  i: number;
  url: string;
  proc: ChildProcess;
  alive: boolean;
  usage?: { cpuSeconds: number; peakRssMb: number; at: string };
}

/** CPU seconds (user + system) and peak resident memory of a live process, from /proc. */
function usageOf(pid: number): { cpuSeconds: number; peakRssMb: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return { cpuSeconds: ticks / 100, peakRssMb: Math.round(Number(hwm?.[1] ?? 0) / 1024) };
}

/** The whole host's CPU time so far (all cores), busy and in all, from /proc/stat. */
function hostCpu(): { busy: number; total: number } {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((x, y) => x + y, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

async function main() {
  mkdirSync(LOGS, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), "kiln-load-"));
  chmodSync(dir, 0o711);
  const pgDir = join(dir, "pg");
  const pgUrl = execFileSync(join(ROOT, "scripts/postgres.sh"), ["start", pgDir, String(await freePort())], { encoding: "utf8" }).trim();
  const admin = new pg.Client({ connectionString: pgUrl });
  await admin.connect();
  await admin.query("CREATE DATABASE kiln_load");
  await admin.end();
  const db = pgUrl.replace(/\/postgres$/, "/kiln_load");
  const sql = new pg.Pool({ connectionString: db, max: 2 });
  const fleet = await startFleetStandIn(BUILD_MS);
  writeFileSync(join(dir, "secret"), `${SECRET}\n`);
  writeFileSync(join(dir, "fly-token"), "load-test-token\n");

  say(`starting ${REPLICAS} replicas on one PostgreSQL`);
  const replicas: Replica[] = await Promise.all(
    Array.from({ length: REPLICAS }, async (_, i) => {
      const listen = `127.0.0.1:${await freePort()}`;
      const data = join(dir, `replica-${i}`);
      mkdirSync(data, { recursive: true });
      writeFileSync(join(dir, `replica-${i}.json`), JSON.stringify({ listen, data, database: db, webhookSecretFile: join(dir, "secret"), leaseSeconds: 3 }));
      const log = openSync(join(LOGS, `replica-${i}.log`), "w");
      const prof = process.env.KILN_LOAD_CPU_PROF && i === 0 ? ["--cpu-prof", "--cpu-prof-dir", process.env.KILN_LOAD_CPU_PROF] : [];
      const proc = spawn(process.execPath, [...prof, join(ROOT, "dist/bin/kiln-scheduler.js"), "--config", join(dir, `replica-${i}.json`), "--log-level", "warn"], { stdio: ["ignore", log, "pipe"] });
      const r: Replica = { i, url: `http://${listen}`, proc, alive: true };
      proc.once("exit", () => (r.alive = false));
      let err = "";
      proc.stderr!.on("data", (d) => {
        err = (err + d).slice(-4000);
        process.stderr.write(`[replica ${i}] ${d}`);
      });
      for (let t = 0; ; t++) {
        if (!r.alive) throw new Error(`replica ${i} exited at start: ${err}`);
        if (await fetch(`${r.url}/healthz`).then((x) => x.ok, () => false)) break;
        await sleep(50);
      }
      return r;
    }),
  );

  say(`creating ${PROJECTS} projects by API`);
  const client = schedulerClient(replicas[0]!.url);
  for (let i = 0; i < PROJECTS; i += 25) {
    await Promise.all(
      Array.from({ length: Math.min(25, PROJECTS - i) }, (_, k) => {
        const n = i + k;
        return client.createProject({
          project: { name: `p${n}`, git: `https://github.com/load/p${n}.git`, github: `load/p${n}`, image: `registry.example/load/p${n}`, machine: { driver: "fly", apiUrl: fleet.url, app: "kiln-load", machineId: `m${n}`, apiTokenFile: join(dir, "fly-token"), kilndUrl: fleet.url } },
        });
      }),
    );
  }

  // The pushes: project n's burst starts at n/N of the spread; its commits come 0.3 s apart.
  interface Push {
    project: number;
    k: number;
    commit: string;
    before: string;
    delivery: string;
    at: number;
    sentAt?: number;
    /** When the replica that accepted it answered (the deployment was durable). */
    answeredAt?: number;
    deployment?: string;
    attempts: number;
    error?: string;
  }
  const pushes: Push[] = [];
  for (let n = 0; n < PROJECTS; n++) {
    let before = sha();
    fleet.history.set(before, { project: `p${n}`, index: -1 });
    for (let k = 0; k < COMMITS; k++) {
      const commit = sha();
      pushes.push({ project: n, k, commit, before, delivery: randomUUID(), at: (n / PROJECTS) * SPREAD_MS + k * 300, attempts: 0 });
      fleet.history.set(commit, { project: `p${n}`, index: k });
      before = commit;
    }
  }
  pushes.sort((x, y) => x.at - y.at);

  const send = async (p: Push) => {
    const body = JSON.stringify({ ref: "refs/heads/main", before: p.before, after: p.commit, deleted: false, repository: { full_name: `load/p${p.project}` } });
    const headers = { "content-type": "application/json", "x-github-event": "push", "x-github-delivery": p.delivery, "x-hub-signature-256": `sha256=${createHmac("sha256", SECRET).update(body).digest("hex")}` };
    p.sentAt = Date.now();
    // A replica that does not answer: the same delivery to another, as GitHub retries.
    for (let attempt = 0; attempt < 6; attempt++) {
      const live = replicas.filter((r) => r.alive);
      const r = attempt === 0 ? replicas[Math.floor(Math.random() * replicas.length)]! : live[Math.floor(Math.random() * live.length)]!;
      p.attempts++;
      try {
        const res = await fetch(`${r.url}/webhooks/github`, { method: "POST", headers, body, signal: AbortSignal.timeout(10_000) });
        const out = (await res.json()) as { deployment?: string; error?: string };
        if (res.status === 202 && out.deployment) {
          p.answeredAt = Date.now();
          p.deployment = out.deployment;
          return;
        }
        p.error = `${res.status} ${out.error ?? ""}`;
      } catch (e) {
        p.error = (e as Error).message;
      }
      await sleep(200 * (attempt + 1));
    }
  };

  say(`sending ${pushes.length} webhooks over ${SPREAD_MS / 1000} s; one replica is killed half-way`);
  const victim = replicas[REPLICAS - 1]!;
  const start = Date.now();
  const cpuBefore = hostCpu();
  const inflight: Promise<void>[] = [];
  let killedAt = 0;
  for (const [idx, p] of pushes.entries()) {
    const wait = start + p.at - Date.now();
    if (wait > 0) await sleep(wait);
    if (!killedAt && idx >= pushes.length / 2) {
      victim.usage = { ...usageOf(victim.proc.pid!), at: "when killed" };
      victim.proc.kill("SIGKILL");
      killedAt = Date.now();
      say(`killed replica ${victim.i} (SIGKILL) after ${idx} webhooks`);
    }
    inflight.push(send(p));
  }
  await Promise.all(inflight);
  const sentDone = Date.now();

  say("waiting for every deployment to end");
  for (;;) {
    const open = Number((await sql.query<{ n: string }>("SELECT count(*) AS n FROM deployments WHERE state IN (1, 2, 3)")).rows[0]!.n);
    if (open === 0) break;
    if (Date.now() - sentDone > 300_000) throw new Error(`${open} deployments still open after 5 minutes`);
    await sleep(500);
  }
  const drained = Date.now();
  const cpuAfter = hostCpu();
  for (const r of replicas) if (r.alive) r.usage = { ...usageOf(r.proc.pid!), at: "at the end" };

  // What became of every push.
  const rows = (
    await sql.query<{ id: string; project: string; commit: string; state: number; build: string | null; error: string | null; superseded_by: string | null }>(
      "SELECT id, project, commit, state, record->>'buildId' AS build, record->>'error' AS error, record->>'supersededBy' AS superseded_by FROM deployments",
    )
  ).rows;
  const byId = new Map(rows.map((r) => [r.id, r]));
  const accepted = pushes.filter((p) => p.deployment);
  const notAccepted = pushes.filter((p) => !p.deployment);
  const lost = accepted.filter((p) => {
    const d = byId.get(p.deployment!);
    return !d || d.commit !== p.commit || ![DeploymentState.SUCCEEDED, DeploymentState.SUPERSEDED].includes(d.state);
  });
  const failed = rows.filter((r) => r.state === DeploymentState.FAILED);
  const duplicates = rows.length - new Set(rows.map((r) => `${r.project}/${r.commit}`)).size;
  // Built twice: more than one build started for one deployment, or for one commit.
  const started = fleet.calls.filter((c) => c.started);
  const perDeployment = new Map<string, number>();
  const perCommit = new Map<string, number>();
  for (const c of started) {
    const dep = c.key.replace(/\.\d+$/, "");
    perDeployment.set(dep, (perDeployment.get(dep) ?? 0) + 1);
    perCommit.set(`${c.project}/${c.commit}`, (perCommit.get(`${c.project}/${c.commit}`) ?? 0) + 1);
  }
  const builtTwice = [...perCommit.values()].filter((n) => n > 1).length;
  const askedAgain = fleet.calls.length - started.length;
  // Superseded correctly: each project's newest commit deployed; each older one superseded, or
  // deployed before the next commit came.
  let newestDeployed = 0;
  let olderSuperseded = 0;
  let olderDeployedFirst = 0;
  let wrong = 0;
  const wrongSamples: unknown[] = [];
  for (const p of accepted) {
    const d = byId.get(p.deployment!);
    if (!d) continue;
    if (p.k === COMMITS - 1) {
      if (d.state === DeploymentState.SUCCEEDED) newestDeployed++;
      else {
        wrong++;
        const by = d.superseded_by ? byId.get(d.superseded_by) : undefined;
        const byPush = by && pushes.find((q) => q.deployment === by.id);
        wrongSamples.push({ project: p.project, k: p.k, state: DeploymentState[d.state], attempts: p.attempts, id: d.id, error: d.error, supersededByK: byPush?.k, supersededByState: by && DeploymentState[by.state] });
      }
    } else if (d.state === DeploymentState.SUPERSEDED) olderSuperseded++;
    else if (d.state === DeploymentState.SUCCEEDED) olderDeployedFirst++;
    else wrong++;
  }
  // Latency: the webhook's first send to the first Build call for its commit.
  const firstCall = new Map<string, number>();
  for (const c of fleet.calls) if (!firstCall.has(`${c.project}/${c.commit}`)) firstCall.set(`${c.project}/${c.commit}`, c.at);
  const latency = accepted.flatMap((p) => {
    const at = firstCall.get(`p${p.project}/${p.commit}`);
    return at === undefined ? [] : [at - p.sentAt!];
  });
  const latencyLive = accepted.filter((p) => p.sentAt! < killedAt - 5000 || p.sentAt! > killedAt + 10_000).flatMap((p) => {
    const at = firstCall.get(`p${p.project}/${p.commit}`);
    return at === undefined ? [] : [at - p.sentAt!];
  });
  // Where the latency goes: the webhook's answer (accepted, durable), then the queue's worker.
  const answer = accepted.map((p) => p.answeredAt! - p.sentAt!);
  const queued = accepted.flatMap((p) => {
    const at = firstCall.get(`p${p.project}/${p.commit}`);
    return at === undefined ? [] : [at - p.answeredAt!];
  });
  const dbBytes = Number((await sql.query<{ n: string }>("SELECT pg_database_size(current_database()) AS n")).rows[0]!.n);

  const result = {
    when: new Date().toISOString(),
    machine: "2 cores, shared; replicas, PostgreSQL and the stand-in on one host",
    settings: { projects: PROJECTS, commitsPerBurst: COMMITS, replicas: REPLICAS, buildMs: BUILD_MS, spreadSeconds: SPREAD_MS / 1000, leaseSeconds: 3 },
    webhooks: { sent: pushes.length, accepted: accepted.length, notAccepted: notAccepted.length, resentToAnotherReplica: pushes.filter((p) => p.attempts > 1).length },
    deployments: { recorded: rows.length, lost: lost.length, failed: failed.length, duplicateRecords: duplicates },
    builds: { started: started.length, builtTwice, buildCallsAnsweredByRequestKey: askedAgain, deploymentsWithTwoBuilds: [...perDeployment.values()].filter((n) => n > 1).length },
    supersede: { newestDeployed, projects: PROJECTS, olderSuperseded, olderDeployedBeforeTheNextCame: olderDeployedFirst, wrong },
    latencyMs: { webhookToBuildCall: { p50: pct(latency, 50), p99: pct(latency, 99), n: latency.length }, awayFromTheKill: { p50: pct(latencyLive, 50), p99: pct(latencyLive, 99), n: latencyLive.length },
      webhookAnswered: { p50: pct(answer, 50), p99: pct(answer, 99), n: answer.length },
      answeredToBuildCall: { p50: pct(queued, 50), p99: pct(queued, 99), n: queued.length },
    },
    hostCpuBusyPercent: Math.round((100 * (cpuAfter.busy - cpuBefore.busy)) / (cpuAfter.total - cpuBefore.total)),
    drainSeconds: (drained - sentDone) / 1000,
    databaseMb: Math.round((dbBytes / 1024 / 1024) * 10) / 10,
    replicas: replicas.map((r) => ({ replica: r.i, killed: r === victim, exitedOnItsOwn: r !== victim && !r.alive, ...r.usage })),
    wrongSamples: wrongSamples.slice(0, 10),
  };
  for (const r of replicas) if (r.alive) r.proc.kill("SIGTERM");
  await Promise.all(replicas.map((r) => (r.alive ? new Promise((res) => r.proc.once("exit", res)) : undefined)));
  await sql.end();
  await fleet.close();
  execFileSync(join(ROOT, "scripts/postgres.sh"), ["stop", pgDir]);
  removeTree(dir);

  mkdirSync(join(ROOT, "bench/results"), { recursive: true });
  const file = join(ROOT, "bench/results", `scheduler-load-${result.when.replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\nwritten to ${file}\n`);
  if (lost.length || builtTwice || wrong) process.exitCode = 1;
}

main().catch((e) => {
  process.stderr.write(`scheduler-load: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
