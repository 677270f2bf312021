// The scheduler's project worker with its collaborators replaced (a machine driver and a kilnd
// that are stand-ins, driven by the test): supersede, wake retries and the one rerun of an
// interrupted build, in milliseconds. The real thing (a real kilnd, podman, a registry) is in
// test/integration/scheduler.test.ts.
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, test } from "node:test";
import type { KilndClient } from "../../src/client/kilnd.js";
import { BuildSchema, BuildState, LogLineSchema, type Build } from "../../src/gen/kiln/v1/builder_pb.js";
import { DeploymentSchema, DeploymentState, DeploymentTimesSchema, type Deployment } from "../../src/gen/kiln/v1/scheduler_pb.js";
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

/** A kilnd stand-in: each build's log stream ends when the test (or a cancel) says how it ended. */
function fakeKilnd() {
  const builds = new Map<string, { build: Build; end: Deferred<Build | "gone"> }>();
  const started: Build[] = [];
  const cancelled: string[] = [];
  let onBuild: ((b: Build) => void) | undefined;
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
  };
  return {
    client: client as unknown as KilndClient,
    started,
    cancelled,
    /** The next build to start. */
    nextBuild: () => new Promise<Build>((r) => (onBuild = r)),
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
    async save(d) {
      saved.set(d.id, create(DeploymentSchema, d));
      if (isFinal(d.state)) finalOf(d.id).resolve(create(DeploymentSchema, d));
    },
  });
  return { worker, final: (d: Deployment) => finalOf(d.id).promise, wakeCalls: () => wakeCalls };
}

describe("project worker (seams)", () => {
  test("a commit during a build (here: while kilnd is being asked for it) cancels it on kilnd: SUPERSEDED by the new one, which is built and SUCCEEDED", async () => {
    const k = fakeKilnd();
    const w = workerWith(k);
    const d1 = deployment("1".repeat(40));
    const first = k.nextBuild();
    w.worker.submit(d1);
    const b1 = await first;
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
    const first = k.nextBuild();
    w.worker.submit(running);
    const b1 = await first;
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
    const next = k.nextBuild();
    w.worker.submit(d);
    k.end(await next, BuildState.SUCCEEDED);
    assert.equal((await w.final(d)).state, DeploymentState.SUCCEEDED);
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
});
