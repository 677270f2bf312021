// The build engine's state machine with its collaborators replaced (engine seams): the pipeline
// is a stand-in that waits where a real build would run podman, so supersede chains, cancel while
// QUEUED and shutdown during recovery are tested in milliseconds. The real pipeline, with podman,
// is tested in test/integration.
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { after, describe, test } from "node:test";
import { BuildRequestSchema, BuildSchema, BuildState, type Build } from "../../src/gen/kiln/v1/builder_pb.js";
import { BuildEngine, type EngineSeams } from "../../src/builds/engine.js";
import { StopSignal, type ActiveBuild } from "../../src/builds/active-build.js";
import { LogStore } from "../../src/logs/log-store.js";
import type { Podman } from "../../src/podman/podman.js";
import { createSecretRoot } from "../../src/secrets/secret-dir.js";
import { MessageStore } from "../../src/store/message-store.js";
import { createDeferred, type Deferred } from "../../src/util/deferred.js";
import { createLogger } from "../../src/util/logger.js";
import { validateBuildRequest } from "../../src/validate/build-request.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const sha = (n: number) => n.toString(16).padStart(40, "0");

/** An engine whose pipeline holds each build, once it has a slot, until release(commit). */
function engineWith(
  dir: string,
  o: { maxConcurrent?: number; recover?: () => Promise<void>; afterward?: (commit: string, signal: AbortSignal) => Promise<string>; fastPath?: (commit: string) => boolean; afterBuild?: () => Promise<void> } = {},
) {
  for (const d of ["builds", "logs", "tmp"]) mkdirSync(join(dir, d), { recursive: true });
  const running = new Map<string, Deferred<void>>();
  const started = new Map<string, Deferred<void>>();
  const gate = (m: Map<string, Deferred<void>>, commit: string) => {
    let d = m.get(commit);
    if (!d) m.set(commit, (d = createDeferred<void>()));
    return d;
  };
  const killed: string[] = [];
  /** What the housekeeping was asked after each successful build: "<project> fast" or "<project> full". */
  const housekept: string[] = [];
  const logs = new LogStore(join(dir, "logs"));
  const seams: EngineSeams = {
    async pipeline(a, deps) {
      a.accepted.resolve(); // "fetched"
      const release = await deps.slots.acquire(a.abort.signal);
      try {
        a.markRunning();
        gate(started, a.spec.commit).resolve();
        await Promise.race([
          gate(running, a.spec.commit).promise,
          new Promise((_, rej) => (a.abort.signal.aborted ? rej(new StopSignal()) : a.abort.signal.addEventListener("abort", () => rej(new StopSignal()), { once: true }))),
        ]);
      } finally {
        release();
      }
      if (o.afterward) a.afterward = () => o.afterward!(a.spec.commit, a.abort.signal);
      a.record.fastPath = o.fastPath?.(a.spec.commit) ?? false;
    },
    recover: o.recover ?? (async () => undefined),
    async kill(a: ActiveBuild) {
      killed.push(a.spec.commit);
      return false;
    },
  };
  const engine = new BuildEngine({
    dataDir: dir,
    maxConcurrentBuilds: o.maxConcurrent ?? 1,
    buildNetwork: "host",
    buildEngine: "buildah",
    imageFormat: "docker",
    insecureRegistries: [],
    pushTimeoutSec: 60,
    pushEngine: "kiln",
    keepRecords: 100,
    records: new MessageStore(BuildSchema, join(dir, "builds")),
    logs,
    git: {} as never,
    // Only for the sweep of working containers; the seams do the rest.
    podman: { env: () => ({}), removeWorkingContainers: async () => undefined } as unknown as Podman,
    secrets: { root: createSecretRoot(join(dir, "secrets")), authFile: undefined, digest: () => "", env: {} } as never,
    logger: createLogger("silent"),
    housekeeping: {
      beforeBuild: async () => false,
      afterBuild: async (project, build) => {
        housekept.push(`${project} ${build.fastPath ? "fast" : "full"}`);
        await o.afterBuild?.();
      },
      onNoSpace: async () => false,
    },
    seams,
  });
  const submit = (project: string, n: number) =>
    engine.submit(validateBuildRequest(create(BuildRequestSchema, { project, source: { kind: { case: "git", value: { url: "https://example.com/r.git", commit: sha(n) } } }, image: "registry.example.com/r" })));
  return {
    engine,
    logs,
    submit,
    release: (n: number) => gate(running, sha(n)).resolve(),
    started: (n: number) => gate(started, sha(n)).promise,
    killed,
    housekept,
    final: async (b: Build) => {
      await engine.settled();
      return engine.get(b.id);
    },
  };
}

describe("build engine (seams)", () => {
  const dirs: string[] = [];
  const dir = () => {
    const d = tempDir("engine-unit");
    dirs.push(d);
    return d;
  };
  after(() => dirs.forEach(removeTree));

  test("a newer commit of a project supersedes the running one and starts only once it is gone; a third supersedes the second while it waits", async () => {
    const e = engineWith(dir());
    const b1 = await e.submit("p", 1);
    await e.started(1);
    // The second is waiting for the first to be gone when the third comes.
    const [b2, b3] = await Promise.all([e.submit("p", 2), e.submit("p", 3)]);
    await e.started(3);
    e.release(3);
    const [f1, f2, f3] = await Promise.all([e.final(b1), e.final(b2), e.final(b3)]);
    assert.equal(f1.state, BuildState.CANCELLED);
    assert.equal(f1.error, `superseded by ${b2.id}`);
    assert.equal(f2.state, BuildState.CANCELLED);
    assert.equal(f2.error, `superseded by ${b3.id}`);
    assert.equal(f2.startTime, undefined, "the second never ran");
    assert.equal(f3.state, BuildState.SUCCEEDED);
    assert.ok(e.killed.includes(sha(1)));
  });

  test("a build waiting for a slot (QUEUED) is cancelled at once; the running one of another project is untouched", async () => {
    const e = engineWith(dir(), { maxConcurrent: 1 });
    const a = await e.submit("a", 1);
    await e.started(1);
    const b = await e.submit("b", 2);
    assert.equal((await e.engine.get(b.id)).state, BuildState.QUEUED);
    const cancelled = await e.engine.cancel(b.id);
    assert.equal(cancelled.state, BuildState.CANCELLED);
    assert.equal(cancelled.error, "cancelled by request");
    assert.equal((await e.engine.get(a.id)).state, BuildState.RUNNING);
    e.release(1);
    assert.equal((await e.final(a)).state, BuildState.SUCCEEDED);
    assert.equal(e.engine.queuedCount, 0);
  });

  test("shutdown during start-up recovery waits for it, then stops the live builds FAILED; a build asked for meanwhile is refused", async () => {
    const recovering = createDeferred<void>();
    const e = engineWith(dir(), { recover: () => recovering.promise });
    const submitted = e.submit("p", 1); // waits for the recovery
    const stopping = e.engine.shutdown("kilnd stopped");
    let stopped = false;
    void stopping.then(() => (stopped = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(stopped, false, "shutdown waits for the recovery");
    recovering.resolve();
    await stopping;
    await assert.rejects(submitted, (err: Error) => /shutting down/.test(err.message));
    await assert.rejects(e.submit("p", 2), (err: Error) => /shutting down/.test(err.message));
  });

  test("what follows a build's result runs once its log has closed; a cancel or the next build of the project does not cut it short, the next build waits for it, and so does shutdown", async () => {
    const events: string[] = [];
    const gates = new Map<string, { end: Deferred<string>; started: Deferred<AbortSignal> }>();
    const gate = (commit: string) => gates.get(commit) ?? (gates.set(commit, { end: createDeferred<string>(), started: createDeferred<AbortSignal>() }), gates.get(commit)!);
    const e = engineWith(dir(), {
      afterward: async (commit, signal) => {
        events.push(`after ${commit.slice(-1)} starts`);
        gate(commit).started.resolve(signal);
        // As the fast path's registry calls do: an abort ends it.
        const said = await Promise.race([gate(commit).end.promise, new Promise<never>((_, rej) => signal.addEventListener("abort", () => rej(signal.reason), { once: true }))]);
        events.push(`after ${commit.slice(-1)} ends`);
        return said;
      },
    });
    const b1 = await e.submit("p", 1);
    e.release(1);
    const signal1 = await gate(sha(1)).started.promise;
    // The result is out: the record says SUCCEEDED and a follower's stream has ended with it.
    const lines: string[] = [];
    for await (const entry of e.logs.read(b1.id, 0, true)) lines.push(entry.text);
    assert.match(lines.at(-1) ?? "", /^succeeded in \d+ ms$/);
    assert.equal((await e.engine.get(b1.id)).state, BuildState.SUCCEEDED);
    assert.equal((await e.engine.cancel(b1.id)).state, BuildState.SUCCEEDED, "a cancel of a build past its result changes nothing");
    void e.started(2).then(() => events.push("build 2 starts"));
    const b2 = e.submit("p", 2);
    // Build 2 accepted: its log says so, and a superseded build would have been told to stop by then.
    while (e.engine.liveTmpDirs().size < 2) await new Promise((r) => setImmediate(r));
    const id2 = [...e.engine.liveTmpDirs()].find((id) => id !== b1.id)!;
    for await (const entry of e.logs.read(id2, 0, true)) if (entry.text.startsWith("accepted: ")) break;
    assert.equal(signal1.aborted, false, "neither the cancel nor the next build cut it short");
    gate(sha(1)).end.resolve("fast path: the next build can start from this one");
    await b2;
    await e.started(2);
    assert.deepEqual(events, ["after 1 starts", "after 1 ends", "build 2 starts"]);
    assert.equal((await e.engine.get(b1.id)).state, BuildState.SUCCEEDED);
    e.release(2);
    const signal2 = await gate(sha(2)).started.promise;
    // A Sleep right after the result: kilnd waits for the work after it, then goes.
    const stopping = e.engine.shutdown("kilnd went to sleep").then(() => events.push("shut down"));
    await new Promise((r) => setImmediate(r));
    gate(sha(2)).end.resolve("fast path: the next build can start from this one");
    await stopping;
    assert.equal(signal2.aborted, false, "shutdown does not cut it short");
    assert.deepEqual(events.slice(-2), ["after 2 ends", "shut down"]);
    assert.equal((await e.engine.get((await b2).id)).state, BuildState.SUCCEEDED, "the build stays as it ended");
  });

  test("the housekeeping after a successful build is told whether it took the fast path (which adds no image to prune); a cancelled build gets none", async () => {
    const e = engineWith(dir(), { fastPath: (commit) => commit === sha(2) });
    for (const n of [1, 2]) {
      const b = await e.submit("p", n);
      e.release(n);
      assert.equal((await e.final(b)).state, BuildState.SUCCEEDED);
    }
    const cancelled = await e.submit("p", 3);
    await e.started(3);
    assert.equal((await e.engine.cancel(cancelled.id)).state, BuildState.CANCELLED);
    await e.engine.settled();
    assert.deepEqual(e.housekept, ["p full", "p fast"]);
  });

  test("a build is settling from its result until the work after it (the prune) has ended (kiln_builds_settling); settled() and a shutdown wait for it", async () => {
    const housekeeping = createDeferred<void>();
    const inHousekeeping = createDeferred<void>();
    const e = engineWith(dir(), {
      afterBuild: () => {
        inHousekeeping.resolve();
        return housekeeping.promise;
      },
    });
    assert.equal(e.engine.settlingCount, 0);
    const b = await e.submit("p", 1);
    await e.started(1);
    assert.equal(e.engine.settlingCount, 0, "a running build is not settling");
    e.release(1);
    await inHousekeeping.promise;
    assert.equal((await e.engine.get(b.id)).state, BuildState.SUCCEEDED, "the result is out");
    assert.equal(e.engine.settlingCount, 1);
    // settled() (the Sleep RPC's wait) and a shutdown wait for it.
    const waits: string[] = [];
    const settled = e.engine.settled().then(() => waits.push("settled"));
    const shutdown = e.engine.shutdown("kilnd went to sleep").then(() => waits.push("shut down"));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(waits, [], "neither ends before the prune");
    housekeeping.resolve();
    await Promise.all([settled, shutdown]);
    assert.equal(e.engine.settlingCount, 0);
    assert.equal((await e.engine.get(b.id)).state, BuildState.SUCCEEDED, "the shutdown left the build as it ended");
  });

  test("shutdown ends a running build FAILED interrupted (not CANCELLED)", async () => {
    const e = engineWith(dir());
    const b = await e.submit("p", 1);
    await e.started(1);
    await e.engine.shutdown("kilnd went to sleep");
    const f = await e.engine.get(b.id);
    assert.equal(f.state, BuildState.FAILED);
    assert.equal(f.error, "interrupted: kilnd went to sleep");
    assert.ok(f.finishTime && f.durations?.total, "ended once, with its time");
  });
});
