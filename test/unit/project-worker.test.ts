// The scheduler's project worker with its collaborators replaced (a machine driver and a kilnd
// that are stand-ins, driven by the test): supersede, wake retries and the one rerun of an
// interrupted build, in milliseconds. The real thing (a real kilnd, podman, a registry) is in
// test/integration/scheduler.test.ts.
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, test } from "node:test";
import type { KilndClient } from "../../src/client/kilnd.js";
import { BuildSchema, BuildState, CommitRelation, LogLineSchema, type Build } from "../../src/gen/kiln/v1/builder_pb.js";
import { DeploymentSchema, DeploymentState, DeploymentTimesSchema, OrderCheckSchema, type Deployment } from "../../src/gen/kiln/v1/scheduler_pb.js";
import type { ProjectConfig } from "../../src/scheduler/config.js";
import { DeploymentEvents, isFinal } from "../../src/scheduler/deployment-events.js";
import { permanentWakeError, type MachineDriver } from "../../src/scheduler/drivers/driver.js";
import { ProjectWorker } from "../../src/scheduler/project-worker.js";
import { createDeferred, type Deferred } from "../../src/util/deferred.js";
import { createLogger } from "../../src/util/logger.js";
import { timestampFromMs } from "../../src/util/time.js";

const project: ProjectConfig = {
  name: "p",
  git: "https://example.com/p.git",
  github: "acme/p",
  branch: "main",
  containerfile: "",
  context: "",
  image: "registry.example.com/p",
  buildArgs: {},
  secretFiles: {},
  registryCredentials: [],
  machine: { driver: "local", data: "/nonexistent", idleTimeout: 1, insecureRegistries: [], port: 0 } as never,
};

let ids = 0;
const deployment = (commit: string) =>
  create(DeploymentSchema, { id: `d${++ids}`, project: "p", commit, state: DeploymentState.QUEUED, trigger: "rpc", times: create(DeploymentTimesSchema, { received: timestampFromMs(Date.now()) }) });

/** A webhook push the store could not order against the branch's head (orderCheck names it). */
const unorderedPush = (commit: string, head: Deployment) =>
  create(DeploymentSchema, { ...deployment(commit), trigger: "webhook", orderCheck: create(OrderCheckSchema, { commit: head.commit, deploymentId: head.id }) });
const push = (commit: string) => create(DeploymentSchema, { ...deployment(commit), trigger: "webhook" });

/** A kilnd stand-in: each build's log stream ends when the test (or a cancel) says how it ended. */
function fakeKilnd() {
  const builds = new Map<string, { build: Build; end: Deferred<Build | "gone"> }>();
  const started: Build[] = [];
  const cancelled: string[] = [];
  const compared: string[] = [];
  let relations: (head: string, base: string) => CommitRelation | Error | Promise<CommitRelation | Error> = () => new ConnectError("no history", Code.Unimplemented);
  let onBuild: ((b: Build) => void) | undefined;
  let onCompare: (() => void) | undefined;
  const client = {
    async build(req: { source?: { kind: { value: { commit: string } } } }) {
      const b = create(BuildSchema, { id: `b${builds.size + 1}`, commit: req.source!.kind.value.commit, state: BuildState.RUNNING });
      builds.set(b.id, { build: b, end: createDeferred() });
      started.push(b);
      onBuild?.(b);
      return { build: b };
    },
    async getBuild(req: { buildId: string }) {
      return { build: builds.get(req.buildId)!.build };
    },
    async cancel(req: { buildId: string }) {
      cancelled.push(req.buildId);
      const x = builds.get(req.buildId)!;
      x.build = create(BuildSchema, { ...x.build, state: BuildState.CANCELLED, error: "cancelled by request" });
      x.end.resolve(x.build);
      return { build: x.build };
    },
    async *streamLogs(req: { buildId: string }) {
      const x = builds.get(req.buildId)!;
      yield { event: { case: "line" as const, value: create(LogLineSchema, { seq: 1n, text: "building" }) } };
      const end = await x.end.promise;
      if (end === "gone") throw new ConnectError("read ECONNRESET", Code.Unavailable);
      yield { event: { case: "build" as const, value: end } };
    },
    async sleep() {
      return {};
    },
    async compareCommits(req: { source: { commit: string }; base: string }) {
      compared.push(`${req.source.commit.slice(0, 1)}:${req.base.slice(0, 1)}`);
      onCompare?.();
      const answer = await relations(req.source.commit, req.base);
      if (answer instanceof Error) throw answer;
      return { relation: answer };
    },
  };
  return {
    client: client as unknown as KilndClient,
    started,
    cancelled,
    /** "head:base" by their first hex digit, for every CompareCommits asked. */
    compared,
    /** How git answers CompareCommits (the test's history). */
    history(f: (head: string, base: string) => CommitRelation | Error | Promise<CommitRelation | Error>) {
      relations = f;
    },
    /** The next build to start. */
    nextBuild: () => new Promise<Build>((r) => (onBuild = r)),
    /** The next CompareCommits to be asked. */
    nextCompare: () => new Promise<void>((r) => (onCompare = r)),
    end(b: Build, state: BuildState, error = "") {
      const x = builds.get(b.id)!;
      x.build = create(BuildSchema, { ...x.build, state, error, imageDigest: state === BuildState.SUCCEEDED ? `sha256:${"a".repeat(64)}` : "" });
      x.end.resolve(x.build);
    },
    /** kilnd went away mid-build; after its restart the record says interrupted. */
    lose(b: Build) {
      const x = builds.get(b.id)!;
      x.build = create(BuildSchema, { ...x.build, state: BuildState.FAILED, error: "interrupted: kilnd restarted" });
      x.end.resolve("gone");
    },
  };
}

function workerWith(kilnd: ReturnType<typeof fakeKilnd>, wakes: Array<"ok" | "fail" | "permanent"> = []) {
  const saved = new Map<string, Deployment>();
  const heads: string[] = [];
  const finals = new Map<string, Deferred<Deployment>>();
  const finalOf = (id: string) => {
    let d = finals.get(id);
    if (!d) finals.set(id, (d = createDeferred()));
    return d;
  };
  let wakeCalls = 0;
  const driver: MachineDriver = {
    async wake() {
      const w = wakes[wakeCalls++] ?? "ok";
      if (w === "fail") throw new Error("machine did not start");
      if (w === "permanent") throw permanentWakeError("Machines API: start: 401 unauthorized");
      return "http://kilnd.invalid";
    },
    waitAsleep: async () => true,
    close: async () => undefined,
  };
  const worker = new ProjectWorker({
    project,
    driver,
    events: new DeploymentEvents(),
    logger: createLogger(process.env.KILN_TEST_DEBUG ? "debug" : "silent"),
    backoffMs: 1,
    connect: () => kilnd.client,
    async advanceHead(commit) {
      heads.push(commit);
    },
    async save(d) {
      saved.set(d.id, create(DeploymentSchema, d));
      if (isFinal(d.state)) finalOf(d.id).resolve(create(DeploymentSchema, d));
    },
  });
  const final = (d: Deployment) => finalOf(d.id).promise;
  return {
    worker,
    final,
    wakeCalls: () => wakeCalls,
    heads,
    /** Submits d and waits for its kilnd build to start. */
    async building(d: Deployment): Promise<Build> {
      const next = kilnd.nextBuild();
      worker.submit(d);
      return next;
    },
    /** Submits d, lets its build succeed, waits for its final record and for the worker to rest. */
    async deployed(d: Deployment): Promise<Deployment> {
      const next = kilnd.nextBuild();
      worker.submit(d);
      kilnd.end(await next, BuildState.SUCCEEDED);
      const f = await final(d);
      await worker.idle();
      return f;
    },
  };
}

describe("project worker (seams)", () => {
  test("a commit during a build (here: while kilnd is being asked for it) cancels it on kilnd: SUPERSEDED by the new one, which is built and SUCCEEDED", async () => {
    const k = fakeKilnd();
    const w = workerWith(k);
    const d1 = deployment("1".repeat(40));
    const b1 = await w.building(d1);
    const second = k.nextBuild();
    const d2 = deployment("2".repeat(40));
    w.worker.submit(d2);
    const f1 = await w.final(d1);
    assert.equal(f1.state, DeploymentState.SUPERSEDED);
    assert.equal(f1.supersededBy, d2.id);
    assert.deepEqual(k.cancelled, [b1.id]);
    k.end(await second, BuildState.SUCCEEDED);
    const f2 = await w.final(d2);
    assert.equal(f2.state, DeploymentState.SUCCEEDED, f2.error);
    assert.equal(f2.attempts, 1);
  });

  test("a commit while another waits replaces it (SUPERSEDED, never built)", async () => {
    const k = fakeKilnd();
    const w = workerWith(k);
    const running = deployment("1".repeat(40));
    const b1 = await w.building(running);
    const waiting = deployment("2".repeat(40));
    const newest = deployment("3".repeat(40));
    w.worker.submit(waiting);
    w.worker.submit(newest);
    const fw = await w.final(waiting);
    assert.equal(fw.state, DeploymentState.SUPERSEDED);
    assert.equal(fw.buildId, "");
    const next = k.nextBuild();
    k.end(b1, BuildState.CANCELLED, "cancelled by request");
    k.end(await next, BuildState.SUCCEEDED);
    assert.equal((await w.final(newest)).state, DeploymentState.SUCCEEDED);
    assert.deepEqual(k.started.map((b) => b.commit), ["1".repeat(40), "3".repeat(40)]);
  });

  test("a wake that fails is retried with backoff; a permanent refusal is not", async () => {
    const k = fakeKilnd();
    const w = workerWith(k, ["fail", "fail", "ok"]);
    const d = deployment("1".repeat(40));
    assert.equal((await w.deployed(d)).state, DeploymentState.SUCCEEDED);
    assert.equal(w.wakeCalls(), 3);

    const k2 = fakeKilnd();
    const w2 = workerWith(k2, ["permanent"]);
    const d2 = deployment("2".repeat(40));
    w2.worker.submit(d2);
    const f2 = await w2.final(d2);
    assert.equal(f2.state, DeploymentState.FAILED);
    assert.match(f2.error, /cannot wake the machine: Machines API: start: 401/);
    assert.equal(w2.wakeCalls(), 1);
    assert.equal(k2.started.length, 0);
  });

  test("kilnd lost mid-build, its record then 'interrupted': the commit is built once more, and only once", async () => {
    const k = fakeKilnd();
    const w = workerWith(k);
    const d = deployment("1".repeat(40));
    let next = k.nextBuild();
    w.worker.submit(d);
    const b1 = await next;
    next = k.nextBuild();
    k.lose(b1);
    const b2 = await next;
    next = k.nextBuild();
    k.lose(b2);
    const f = await w.final(d);
    assert.equal(f.state, DeploymentState.FAILED);
    assert.match(f.error, /^interrupted/);
    assert.equal(f.attempts, 2, "one rerun, no more");
    assert.equal(k.started.length, 2);
  });

  test("an out-of-order push that git says is an ancestor of the newest is SUPERSEDED by it: never built, the newest's build not cancelled, the head unmoved", async () => {
    const k = fakeKilnd();
    k.history(() => CommitRelation.BEHIND);
    const w = workerWith(k);
    const c3 = push("3".repeat(40));
    const b3 = await w.building(c3);
    const c1 = unorderedPush("1".repeat(40), c3);
    w.worker.submit(c1);
    k.end(b3, BuildState.SUCCEEDED);
    const f1 = await w.final(c1);
    assert.equal(f1.state, DeploymentState.SUPERSEDED);
    assert.equal(f1.supersededBy, c3.id);
    assert.match(f1.error, /older commit of the branch than 3{40} \(git: its ancestor\)/);
    assert.equal((await w.final(c3)).state, DeploymentState.SUCCEEDED);
    assert.deepEqual(k.cancelled, []);
    assert.deepEqual(k.started.map((b) => b.commit[0]), ["3"]);
    assert.deepEqual(k.compared, ["1:3"]);
    assert.deepEqual(w.heads, []);
  });

  test("out-of-order pushes during a build are ordered on its kilnd at once: one git says is newer cancels the build and becomes the head; one older than that is SUPERSEDED", async () => {
    const k = fakeKilnd();
    // History 3 <- 5 <- 7: a higher digit is a descendant.
    k.history((head, base) => (head > base ? CommitRelation.AHEAD : CommitRelation.BEHIND));
    const w = workerWith(k);
    const c3 = push("3".repeat(40));
    const b3 = await w.building(c3);
    const c7 = unorderedPush("7".repeat(40), c3);
    const c5 = unorderedPush("5".repeat(40), c3);
    const next = k.nextBuild();
    w.worker.submit(c7);
    w.worker.submit(c5);
    const b7 = await next;
    assert.deepEqual(k.cancelled, [b3.id], "the older build was cancelled, not waited for");
    const f3 = await w.final(c3);
    assert.equal(f3.state, DeploymentState.SUPERSEDED);
    assert.equal(f3.supersededBy, c7.id);
    assert.equal(b7.commit, "7".repeat(40));
    k.end(b7, BuildState.SUCCEEDED);
    assert.equal((await w.final(c7)).state, DeploymentState.SUCCEEDED);
    const f5 = await w.final(c5);
    assert.equal(f5.state, DeploymentState.SUPERSEDED);
    assert.equal(f5.supersededBy, c7.id);
    assert.deepEqual(k.compared, ["7:3", "5:7"], "the second is compared with the newest found, not the head it arrived on");
    assert.deepEqual(w.heads, ["7".repeat(40)]);
  });

  test("split histories (a force push): the later arrival wins; a push placed during the comparison is compared with again", async () => {
    const k = fakeKilnd();
    const gate = createDeferred<void>();
    k.history(async (head, base) => {
      if (head[0] === "a" && base[0] === "3") await gate.promise;
      return CommitRelation.DIVERGED;
    });
    const w = workerWith(k);
    const c3 = push("3".repeat(40));
    await w.deployed(c3);
    // a arrives first, unordered; while git is asked, b (ordered) is delivered after it.
    const a = unorderedPush("a".repeat(40), c3);
    const next = k.nextBuild();
    const asked = k.nextCompare();
    w.worker.submit(a);
    await asked;
    const b = push("b".repeat(40));
    w.worker.submit(b);
    gate.resolve();
    const fa = await w.final(a);
    assert.equal(fa.state, DeploymentState.SUPERSEDED);
    assert.equal(fa.supersededBy, b.id);
    assert.match(fa.error, /a force push/);
    assert.deepEqual(k.compared, ["a:3", "a:b"]);
    const bb = await next;
    assert.equal(bb.commit, "b".repeat(40));
    k.end(bb, BuildState.SUCCEEDED);
    assert.equal((await w.final(b)).state, DeploymentState.SUCCEEDED);

    // Alone, a force push arriving last is deployed.
    const f = unorderedPush("f".repeat(40), b);
    assert.equal((await w.deployed(f)).state, DeploymentState.SUCCEEDED);
    assert.deepEqual(w.heads, ["f".repeat(40)]);
  });

  test("when git cannot order the push (an older kilnd: Unimplemented), the newest arrival wins, as before", async () => {
    const k = fakeKilnd();
    const w = workerWith(k);
    const c3 = push("3".repeat(40));
    await w.deployed(c3);
    const c1 = unorderedPush("1".repeat(40), c3);
    assert.equal((await w.deployed(c1)).state, DeploymentState.SUCCEEDED);
    assert.deepEqual(w.heads, ["1".repeat(40)]);
  });
});
