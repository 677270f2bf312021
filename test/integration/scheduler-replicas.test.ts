// kiln-scheduler at fleet scale: three replicas (separate processes) on one real PostgreSQL,
// real kilnds (local driver: one per project's volume, adopted by whichever replica drives it),
// a real registry and git repository. Replicas are killed with SIGKILL.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { kilndClient } from "../../src/client/kilnd.js";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { DeploymentState, type Deployment } from "../../src/gen/kiln/v1/scheduler_pb.js";
import { isFinal } from "../../src/scheduler/deployment-events.js";
import { helloApp } from "../helpers/apps.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { startFlyStandIn, type FlyStandIn } from "../helpers/fly-standin.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { startPostgres, type TestPostgres } from "../helpers/postgres.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { startSchedulerProcess, type SchedulerProcess } from "../helpers/scheduler-process.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { waitFor } from "../helpers/wait.js";

const SECRET = "webhook-secret-for-replicas";
const FLY_TOKEN = "fly-api-token";
const REPO = "acme/fleet";

const codeOf = async (p: Promise<unknown>) =>
  p.then(
    () => "ok",
    (e: unknown) => (e instanceof ConnectError ? Code[e.code] : String(e)),
  );

describe("scheduler replicas on one PostgreSQL", () => {
  let dir: string, pgs: TestPostgres, db: string, sql: pg.Pool, reg: TestRegistry, base: string, repo: TestRepo, fly: FlyStandIn, flyKilnd: TestKilnd;
  const replicas: SchedulerProcess[] = [];
  const config = (i: number) => ({
    data: join(dir, `replica-${i}`),
    database: db,
    webhookSecretFile: join(dir, "secret"),
    leaseSeconds: 3,
    fly: { apiUrl: fly.url, app: "kiln-builders", apiTokenFile: join(dir, "fly-token"), image: "registry.example/kiln/builder:0.1.0", region: "ams", volumeSizeGb: 10, kilndUrl: flyKilnd.addr },
  });
  const startReplica = (i: number) => startSchedulerProcess(join(dir, `replica-${i}.json`), config(i));
  /** A replica that runs (one may have just been killed). */
  const any = () => replicas.find((r) => r.proc.exitCode === null && r.proc.signalCode === null)!.client;
  let machinePort = 0;
  let machineData = "";

  before(async () => {
    dir = tempDir("replicas");
    pgs = await startPostgres();
    db = await pgs.database("replicas");
    sql = new pg.Pool({ connectionString: db, max: 2 });
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), helloApp(base));
    writeFileSync(join(dir, "secret"), `${SECRET}\n`);
    writeFileSync(join(dir, "fly-token"), `${FLY_TOKEN}\n`);
    fly = await startFlyStandIn(FLY_TOKEN, "kiln-builders", "0000000000000a");
    flyKilnd = await startKilnd({ data: join(dir, "fly-kilnd"), registry: reg.host });
    // Started at once: the schema is migrated by one of them, the others find it done.
    replicas.push(...(await Promise.all([0, 1, 2].map(startReplica))));
  });
  after(async () => {
    for (const r of replicas) await r.stop();
    await flyKilnd?.stop();
    await fly?.close();
    await sql?.end();
    pgs?.stop();
    await reg?.stop();
    removeTree(dir);
  });

  const waitFinal = async (id: string, timeoutMs = 180_000): Promise<Deployment> => {
    let d: Deployment | undefined;
    await waitFor(async () => {
      d = (await any().getDeployment({ deploymentId: id })).deployment!;
      return isFinal(d.state);
    }, timeoutMs, `deployment ${id} to end`, 100);
    return d!;
  };
  const waitBuilding = async (id: string): Promise<Deployment> => {
    let d: Deployment | undefined;
    await waitFor(async () => {
      d = (await any().getDeployment({ deploymentId: id })).deployment!;
      return d.state === DeploymentState.BUILDING && d.buildId !== "";
    }, 120_000, `deployment ${id} to build`, 100);
    return d!;
  };
  /** The replica whose lease drives the project's queue now (by its pid in the lease's holder). */
  const holderOf = async (project: string): Promise<number | undefined> => {
    const r = await sql.query<{ holder: string }>("SELECT holder FROM leases WHERE project = $1 AND expires > now()", [project]);
    const pid = Number(r.rows[0]?.holder.split(":")[1]);
    const i = replicas.findIndex((x) => x.proc.pid === pid);
    return i >= 0 ? i : undefined;
  };
  const pushTo = async (i: number, commit: string, delivery = randomUUID()) => {
    const r = await replicas[i]!.push({ secret: SECRET, repository: REPO, commit, delivery });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    return String(r.body.deployment);
  };

  test("three replicas started at once: the schema is migrated once", async () => {
    const r = await sql.query<{ version: number }>("SELECT version FROM kiln_migrations ORDER BY version");
    assert.deepEqual(r.rows.map((x) => x.version), [1]);
    for (const rep of replicas) assert.equal((await fetch(`${rep.url}/healthz`)).status, 200);
  });

  test("projects by API (local driver): created on one replica, seen by every replica, checked, updated and deleted", async () => {
    const project = { name: "fleet", git: repo.url, github: REPO, image: `${reg.host}/test/fleet`, machine: { driver: "local", idleTimeout: 30, insecureRegistries: [reg.host] } };
    const created = (await replicas[0]!.client.createProject({ project })).project!;
    assert.equal(created.source, "api");
    assert.equal(created.machine!.data, join(dir, "replica-0", "machines", "fleet"), "its data directory");
    assert.ok((created.machine!.port ?? 0) > 0, "its own port");
    machinePort = created.machine!.port!;
    machineData = created.machine!.data;
    const seen = (await replicas[2]!.client.getProject({ name: "fleet" })).project!;
    assert.deepEqual(seen, created);
    assert.ok((await replicas[1]!.client.listProjects({})).projects.some((p) => p.name === "fleet"));

    assert.equal(await codeOf(replicas[1]!.client.createProject({ project })), "AlreadyExists");
    assert.equal(await codeOf(replicas[1]!.client.createProject({ project: { ...project, name: "Bad Name" } })), "InvalidArgument");
    assert.equal(await codeOf(replicas[1]!.client.createProject({ project: { ...project, name: "rel", kilndTokenFile: "token" } })), "InvalidArgument");
    assert.equal(await codeOf(replicas[1]!.client.createProject({ project: { ...project, name: "nomachine", machine: { driver: "vm" } } })), "InvalidArgument");
    assert.equal(await codeOf(replicas[1]!.client.getProject({ name: "nope" })), "NotFound");
    assert.equal(await codeOf(replicas[1]!.client.deleteProject({ name: "nope" })), "NotFound");

    const updated = (await replicas[1]!.client.updateProject({ project: { ...project, buildArgs: { GREETING: "hi" }, machine: { driver: "fly" } } })).project!;
    assert.deepEqual(updated.buildArgs, { GREETING: "hi" });
    assert.deepEqual(updated.machine, created.machine, "an update keeps the machine");

    await replicas[2]!.client.createProject({ project: { ...project, name: "short-lived", github: "acme/short" } });
    await replicas[0]!.client.deleteProject({ name: "short-lived" });
    assert.equal(await codeOf(replicas[1]!.client.getProject({ name: "short-lived" })), "NotFound");
  });

  test("the same webhook delivery to two replicas at once is one deployment", async () => {
    const sha = repo.commit({ "src/a.txt": "delivered twice\n" });
    const delivery = randomUUID();
    const [a, b] = await Promise.all([pushTo(0, sha, delivery), pushTo(1, sha, delivery)]);
    assert.equal(a, b);
    const rows = await sql.query("SELECT id FROM deployments WHERE delivery = $1", [delivery]);
    assert.equal(rows.rowCount, 1);
    const d = await waitFinal(a);
    assert.equal(d.state, DeploymentState.SUCCEEDED, d.error);
    assert.equal(d.imageDigest, await reg.digest("test/fleet", sha));
  });

  test("a commit received by one replica supersedes the build another replica drives: cancelled on kilnd", async () => {
    const slow = repo.commit({ Containerfile: `FROM ${base}\nCOPY src/ /src/\nRUN echo slow-start && sleep 60\n`, "src/a.txt": "slow\n" });
    const first = await pushTo(0, slow);
    const building = await waitBuilding(first);
    const holder = (await holderOf("fleet"))!;
    assert.notEqual(holder, undefined, "a replica holds the queue");
    const other = (holder + 1) % 3;
    const fast = repo.commit({ Containerfile: helloApp(base).Containerfile as string, "src/a.txt": "fast\n" });
    const second = await pushTo(other, fast);
    const d1 = await waitFinal(first);
    assert.equal(d1.state, DeploymentState.SUPERSEDED, d1.error);
    assert.equal(d1.supersededBy, second);
    const b1 = (await kilndClient(`http://127.0.0.1:${machinePort}`).getBuild({ buildId: building.buildId })).build!;
    assert.equal(b1.state, BuildState.CANCELLED, "the superseded build was stopped on kilnd");
    const d2 = await waitFinal(second);
    assert.equal(d2.state, DeploymentState.SUCCEEDED, d2.error);
  });

  test("pushes with gaps, each to another replica: git (on the project's kilnd) orders them; an older one is never deployed, a newer one is and becomes the head", async () => {
    const [c0, c1, c2, c3, c4, c5, c6] = [0, 1, 2, 3, 4, 5, 6].map((i) => repo.commit({ "src/a.txt": `replica gap ${i}\n` }));
    const send = async (i: number, commit: string, before: string) => {
      const r = await replicas[i]!.push({ secret: SECRET, repository: REPO, commit, before, delivery: randomUUID() });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      return r.body as { deployment: string; superseded?: string };
    };
    const orderCheckOf = async (id: string) => (await sql.query<{ c: unknown }>("SELECT record->'orderCheck' AS c FROM deployments WHERE id = $1", [id])).rows[0]?.c;
    const p3 = await send(0, c3!, c2!);
    assert.ok(await orderCheckOf(p3.deployment), "push 3 could not be ordered by its links: git is to be asked");
    const p1 = await send(1, c1!, c0!); // push 0 never delivered either
    const [d3, d1] = await Promise.all([waitFinal(p3.deployment), waitFinal(p1.deployment)]);
    assert.equal(d3.state, DeploymentState.SUCCEEDED, d3.error);
    assert.equal(d1.state, DeploymentState.SUPERSEDED, d1.error);
    assert.equal(d1.supersededBy, p3.deployment);
    assert.match(d1.error, /\(git: its ancestor\)/);
    assert.equal(d1.buildId, "");
    const p2 = await send(2, c2!, c1!);
    assert.match(p2.superseded ?? "", new RegExp(`older commit of the branch than ${c3}`), "named by push 3 as its before: stale on arrival");
    // A newer push across a gap (push 4 never delivered) is deployed, and the head moves to it.
    const p5 = await send(1, c5!, c4!);
    const d5 = await waitFinal(p5.deployment);
    assert.equal(d5.state, DeploymentState.SUCCEEDED, d5.error);
    const head = await sql.query<{ commit: string }>("SELECT commit FROM branch_heads WHERE project = 'fleet'");
    assert.equal(head.rows[0]?.commit, c5);
    const p6 = await send(2, c6!, c5!);
    assert.equal(await orderCheckOf(p6.deployment), null, "push 6 follows the head git confirmed: ordered by its links");
    assert.equal((await waitFinal(p6.deployment)).state, DeploymentState.SUCCEEDED);
    for (const c of [c1!, c2!]) assert.equal(await reg.digest("test/fleet", c), undefined);
  });

  test("the replica driving a build is killed with SIGKILL: another takes the queue over, looks the build up (not started again), and it ends once", async (t) => {
    const sha = repo.commit({ Containerfile: `FROM ${base}\nCOPY src/ /src/\nRUN echo long-step && sleep 8\n`, "src/a.txt": "failover\n" });
    const id = await pushTo(1, sha);
    const building = await waitBuilding(id);
    const dead = (await holderOf("fleet"))!;
    assert.notEqual(dead, undefined);
    const killedAt = Date.now();
    await replicas[dead]!.kill9();
    let taker: number | undefined;
    await waitFor(async () => {
      taker = await holderOf("fleet");
      return taker !== undefined && taker !== dead;
    }, 30_000, "another replica to take the queue", 100);
    t.diagnostic(`queue taken over by replica ${taker} ${Date.now() - killedAt} ms after the SIGKILL (lease 3 s)`);
    const d = await waitFinal(id);
    assert.equal(d.state, DeploymentState.SUCCEEDED, d.error);
    assert.equal(d.buildId, building.buildId, "the same kilnd build, looked up");
    assert.equal(d.attempts, 1);
    // kilnd is asleep by now: its build records on the volume say what it was asked.
    const records = readdirSync(join(machineData, "builds")).map((f) => readFileSync(join(machineData, "builds", f), "utf8"));
    assert.equal(records.filter((r) => r.includes(sha)).length, 1, "kilnd built the commit once");
    assert.equal(d.imageDigest, await reg.digest("test/fleet", sha));
    replicas[dead] = await startReplica(dead);
  });

  test("FollowDeployment on every replica, driving it or not: each change, then the end, then the stream ends", async () => {
    const sha = repo.commit({ "src/a.txt": "followed\n" });
    const id = await pushTo(2, sha);
    const follow = async (i: number) => {
      const states: DeploymentState[] = [];
      for await (const m of replicas[i]!.client.followDeployment({ deploymentId: id }, { signal: AbortSignal.timeout(180_000) })) {
        if (m.event.case === "deployment") states.push(m.event.value.state);
      }
      return states;
    };
    const all = await Promise.all([0, 1, 2].map(follow));
    for (const states of all) assert.equal(states.at(-1), DeploymentState.SUCCEEDED, `ended with the final state: ${states.map((s) => DeploymentState[s]).join(" ")}`);
  });

  test("projects by API (fly driver): a volume and a machine provisioned and stopped, a commit built through it, both destroyed on delete", async () => {
    const project = { name: "on-fly", git: repo.url, github: "acme/on-fly", image: `${reg.host}/test/on-fly`, machine: { driver: "fly" } };
    const created = (await replicas[1]!.client.createProject({ project })).project!;
    const m = created.machine!;
    assert.equal(m.driver, "fly");
    const machine = fly.machines.get(m.machineId)!;
    assert.ok(machine, "the machine exists");
    const volume = fly.volumes.get(m.volumeId)!;
    assert.equal(volume.state, "created");
    assert.equal(volume.attached_machine_id, machine.id);
    assert.deepEqual(machine.config.mounts, [{ volume: volume.id, path: "/var/lib/kiln" }], "the volume at kilnd's storage root");
    assert.equal(machine.config.image, "registry.example/kiln/builder:0.1.0");
    assert.equal(machine.state, "stopped", "it sleeps until its first commit");
    // The stand-in's machine runs this kilnd: when kilnd goes to sleep, the machine stops.
    void flyKilnd.exited.then(() => (machine.state = "stopped"));

    const sha = repo.head();
    const d = (await replicas[0]!.client.submitCommit({ project: "on-fly", commit: sha })).deployment!;
    const done = await waitFinal(d.id);
    assert.equal(done.state, DeploymentState.SUCCEEDED, done.error);
    assert.ok(fly.requests.includes(`POST /v1/apps/kiln-builders/machines/${m.machineId}/start`), "woken through the Machines API");
    assert.equal(done.imageDigest, await reg.digest("test/on-fly", sha));

    await replicas[2]!.client.deleteProject({ name: "on-fly" });
    assert.equal(fly.machines.has(m.machineId), false, "the machine is destroyed");
    assert.equal(fly.volumes.get(m.volumeId)!.state, "destroyed", "the volume is destroyed");
    assert.equal(await codeOf(replicas[0]!.client.getProject({ name: "on-fly" })), "NotFound");
  });
});
