// Cancel, supersede and queueing: real podman builds stopped in the middle of a RUN step.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { helloApp, slowApp } from "../helpers/apps.js";
import { pullIntoKilnd, pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { podmanProcessesFor, processesWith, runcContainersUnder, workingContainers } from "../helpers/leftovers.js";
import { waitForLine } from "../helpers/logs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { waitFor } from "../helpers/wait.js";

describe("cancel, supersede, queue", () => {
  let dir: string, reg: TestRegistry, base: string, kilnd: TestKilnd, slow: TestRepo, fast: TestRepo;
  const data = () => join(dir, "data");
  const SLEEP = 313; // a RUN step's sleep, unique enough to find its process

  before(async () => {
    dir = tempDir("cancel");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    slow = makeRepo(join(dir, "slow"), slowApp(base, SLEEP));
    fast = makeRepo(join(dir, "fast"), helloApp(base));
    kilnd = await startKilnd({ data: data(), registry: reg.host, args: ["--max-concurrent-builds", "1"] });
    // Cancels of podman's build and buildah's layer cache after them: the base is in storage already (no first build).
    pullIntoKilnd(data(), base);
  });
  after(async () => {
    await kilnd?.stop();
    await reg?.stop();
    removeTree(dir);
  });

  const submit = async (project: string, repo: TestRepo, commit = repo.head()) => {
    const { build } = await kilnd.client.build({
      project,
      source: { kind: { case: "git", value: { url: repo.url, commit } } },
      image: `${reg.host}/test/${project}`,
    });
    return build!;
  };

  const assertNothingLeft = async () => {
    // podman exits on its own right after the RUN container is killed; give it that moment.
    const gone = () => podmanProcessesFor(data()).length === 0 && processesWith(`sleep ${SLEEP}`).length === 0;
    await waitFor(gone, 5000, "the build's processes to exit").catch(() => {});
    assert.deepEqual(podmanProcessesFor(data()), [], "no podman/buildah process");
    assert.deepEqual(processesWith(`sleep ${SLEEP}`), [], "the RUN step's process is gone");
    assert.deepEqual(runcContainersUnder(data()), [], "no runc container");
    assert.deepEqual(workingContainers(data()), [], "no buildah working container");
  };

  test("cancel in the middle of a long RUN step stops it and leaves nothing behind", async (t) => {
    const b = await submit("slow", slow);
    await waitForLine(kilnd.client, b.id, "before-sleep");
    await waitFor(() => processesWith(`sleep ${SLEEP}`).length > 0, 5000, "the RUN step's sleep to start");
    const t0 = Date.now();
    const { build: cancelled } = await kilnd.client.cancel({ buildId: b.id });
    t.diagnostic(`Cancel returned after ${Date.now() - t0} ms`);
    assert.equal(cancelled!.state, BuildState.CANCELLED);
    assert.equal(cancelled!.error, "cancelled by request");
    await assertNothingLeft();
    const again = (await kilnd.client.cancel({ buildId: b.id })).build!;
    assert.equal(again.state, BuildState.CANCELLED, "cancelling a finished build changes nothing");
    assert.deepEqual(again.finishTime, cancelled!.finishTime);
  });

  test("the next build after a cancel still uses the layer cache", async () => {
    // Same app with a quick RUN: FROM, WORKDIR and COPY prep.txt were committed before the cancel.
    const sha = slow.commit(slowApp(base, 0));
    const b = await kilnd.waitDone((await submit("slow", slow, sha)).id);
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    assert.equal(b.stepsCached, 2, "WORKDIR and COPY prep.txt from cache");
  });

  test("a new build of the same project supersedes the running one", async () => {
    const slowSha = slow.commit(slowApp(base, SLEEP));
    const a = await submit("slow", slow, slowSha);
    await waitForLine(kilnd.client, a.id, "before-sleep");
    const fixSha = slow.commit(slowApp(base, 0));
    const b = await submit("slow", slow, fixSha);
    const aDone = await kilnd.waitDone(a.id);
    assert.equal(aDone.state, BuildState.CANCELLED);
    assert.equal(aDone.error, `superseded by ${b.id}`);
    const bDone = await kilnd.waitDone(b.id);
    assert.equal(bDone.state, BuildState.SUCCEEDED, bDone.error);
    assert.equal(bDone.imageDigest, await reg.digest("test/slow", fixSha));
    await assertNothingLeft();
  });

  test("another project's build waits in QUEUED for the one build slot, then runs", async () => {
    const a = await submit("slow", slow, slow.commit(slowApp(base, SLEEP)));
    await waitForLine(kilnd.client, a.id, "before-sleep");
    const q = await submit("fast", fast);
    assert.equal(q.state, BuildState.QUEUED);
    assert.equal((await kilnd.client.getBuild({ buildId: q.id })).build!.state, BuildState.QUEUED);
    await kilnd.client.cancel({ buildId: a.id });
    const done = await kilnd.waitDone(q.id);
    assert.equal(done.state, BuildState.SUCCEEDED, done.error);
  });

  test("a queued build can be cancelled before it runs", async () => {
    const a = await submit("slow", slow, slow.commit(slowApp(base, SLEEP)));
    await waitForLine(kilnd.client, a.id, "before-sleep");
    const q = await submit("fast", fast, fast.commit({ "src/a.txt": "queued\n" }));
    const c = (await kilnd.client.cancel({ buildId: q.id })).build!;
    assert.equal(c.state, BuildState.CANCELLED);
    assert.equal(c.startTime, undefined, "it never started");
    await kilnd.client.cancel({ buildId: a.id });
    await assertNothingLeft();
  });
});
