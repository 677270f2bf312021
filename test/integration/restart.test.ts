// kill -9 of kilnd in the middle of a build, then a restart on the same volume.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { slowApp } from "../helpers/apps.js";
import { pullIntoKilnd, pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { podmanProcessesFor, processesWith, runcContainersUnder, workingContainers } from "../helpers/leftovers.js";
import { logLines, waitForLine } from "../helpers/logs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { waitFor } from "../helpers/wait.js";

describe("restart after kill -9", () => {
  let dir: string, reg: TestRegistry, base: string, kilnd: TestKilnd | undefined, repo: TestRepo;
  const data = () => join(dir, "data");
  const SLEEP = 317;

  before(async () => {
    dir = tempDir("restart");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), slowApp(base, SLEEP));
  });
  after(async () => {
    await kilnd?.stop();
    await reg?.stop();
    removeTree(dir);
  });

  test("a build running when kilnd is killed is FAILED(interrupted) after the restart, its leftovers gone, and the next build is clean", async () => {
    kilnd = await startKilnd({ data: data(), registry: reg.host });
    // podman's build killed, and buildah's layer cache after it: the base is in storage already (no first build).
    pullIntoKilnd(data(), base);
    const { build } = await kilnd.client.build({
      project: "app",
      source: { kind: { case: "git", value: { url: repo.url, commit: repo.head() } } },
      image: `${reg.host}/test/app`,
    });
    // The RUN step's own output line (the STEP line that echoes the command contains the text too).
    await waitForLine(kilnd.client, build!.id, "before-sleep", 60_000, true);
    await waitFor(() => processesWith(`sleep ${SLEEP}`).length > 0, 5000, "the RUN step to run");
    await kilnd.kill9();
    assert.ok(processesWith(`sleep ${SLEEP}`).length > 0, "the RUN step outlives a killed kilnd");

    kilnd = await startKilnd({ data: data(), registry: reg.host });
    const b = (await kilnd.client.getBuild({ buildId: build!.id })).build!;
    assert.equal(b.state, BuildState.FAILED);
    assert.equal(b.error, "interrupted: kilnd restarted");
    assert.ok(b.finishTime);
    // kilnd's own podman calls at start (the overlay check) are done once it reports the check.
    await waitFor(async () => (await kilnd!.client.getStorage({})).overlay?.checked === true, 10_000, "kilnd's overlay check");
    // Killed processes take a moment to be reaped: wait for the end, then state it.
    const gone = () => podmanProcessesFor(data()).length === 0 && processesWith(`sleep ${SLEEP}`).length === 0;
    await waitFor(gone, 5000, "the orphaned build's processes to end").catch(() => {});
    assert.deepEqual(podmanProcessesFor(data()), []);
    assert.deepEqual(processesWith(`sleep ${SLEEP}`), []);
    assert.deepEqual(runcContainersUnder(data()), []);
    assert.deepEqual(workingContainers(data()), []);

    // The log written before the kill is still there.
    const lines = await logLines(kilnd, build!.id);
    assert.ok(lines.includes("before-sleep"));

    const sha = repo.commit(slowApp(base, 0));
    const { build: next } = await kilnd.client.build({
      project: "app",
      source: { kind: { case: "git", value: { url: repo.url, commit: sha } } },
      image: `${reg.host}/test/app`,
    });
    const done = await kilnd.waitDone(next!.id);
    assert.equal(done.state, BuildState.SUCCEEDED, done.error);
    assert.equal(done.stepsCached, 2, "WORKDIR and COPY from the cache the killed build made");
    assert.equal(done.imageDigest, await reg.digest("test/app", sha));
  });

  test("SIGTERM in the middle of a build: kilnd (the shipped bundle) stops gracefully, exits 0, and the build is FAILED(interrupted) on record", async () => {
    await kilnd?.stop();
    kilnd = await startKilnd({ data: data(), registry: reg.host, bundle: true });
    const sha = repo.commit(slowApp(base, SLEEP));
    const { build } = await kilnd.client.build({
      project: "app",
      source: { kind: { case: "git", value: { url: repo.url, commit: sha } } },
      image: `${reg.host}/test/app`,
    });
    await waitForLine(kilnd.client, build!.id, "before-sleep");
    assert.equal(await kilnd.stop(), 0, "a graceful stop is exit 0, even with build processes running");
    kilnd = await startKilnd({ data: data(), registry: reg.host });
    const b = (await kilnd.client.getBuild({ buildId: build!.id })).build!;
    assert.equal(b.state, BuildState.FAILED);
    assert.equal(b.error, "interrupted: kilnd stopped");
    await waitFor(async () => (await kilnd!.client.getStorage({})).overlay?.checked === true, 10_000, "kilnd's overlay check");
    await waitFor(() => processesWith(`sleep ${SLEEP}`).length === 0, 5000, "the RUN step to end").catch(() => {});
    assert.deepEqual(processesWith(`sleep ${SLEEP}`), []);
  });
});
