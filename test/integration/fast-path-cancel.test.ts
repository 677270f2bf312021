// Cancel reaches the fast path: its abort signal goes through git, the making of the layer and
// the registry client, so a Cancel during the push of a 40 MB layer answers at once (the time is
// reported, not asserted) and nothing is tagged after the build is CANCELLED.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { logText } from "../helpers/logs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { startStallingProxy, type StallingProxy } from "../helpers/stalling-proxy.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

describe("cancel during a fast-path push", () => {
  let dir: string, reg: TestRegistry, proxy: StallingProxy, k: TestKilnd, repo: TestRepo;
  before(async () => {
    dir = tempDir("fpcancel");
    reg = await startRegistry(join(dir, "registry"));
    proxy = await startStallingProxy(reg.host);
    const base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), { Containerfile: `FROM ${base}\nCOPY data/ /data/\n`, "data/blob.bin": randomBytes(1024).toString("base64") });
    k = await startKilnd({ data: join(dir, "data"), registry: proxy.host, args: ["--insecure-registry", reg.host] });
  });
  after(async () => {
    await k?.stop();
    await proxy?.stop();
    await reg?.stop();
    if (dir) removeTree(dir);
  });

  const submit = async (commit: string) =>
    (await k.client.build({ project: "big", source: { kind: { case: "git", value: { url: repo.url, commit } } }, image: `${proxy.host}/test/big` })).build!;

  test("the full build becomes the base", async () => {
    const b = await k.waitDone((await submit(repo.head())).id);
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
  });

  test("a Cancel while the 40 MB layer is being pushed: CANCELLED, and the commit's tag never reaches the registry", async (t) => {
    // Incompressible, so the layer really is 40 MB on the wire.
    const commit = repo.commit({ "data/blob.bin": randomBytes(40 * 1024 * 1024).toString("latin1") });
    proxy.stall(true);
    const manifestsBefore = proxy.manifestPuts.length;
    const b = await submit(commit);
    // The upload is held, or the build ended without getting there (then the test fails, not hangs).
    const ended = await Promise.race([proxy.held().then(() => undefined), k.waitDone(b.id)]);
    assert.equal(ended, undefined, `the build ended before its push: ${ended?.error}`);
    const t0 = Date.now();
    const { build: cancelled } = await k.client.cancel({ buildId: b.id });
    const ms = Date.now() - t0;
    t.diagnostic(`Cancel answered ${ms} ms after the call, during the push of the fast path's 40 MB layer`);
    assert.equal(cancelled!.state, BuildState.CANCELLED, cancelled!.error);
    proxy.stall(false);
    assert.equal(proxy.manifestPuts.length, manifestsBefore, "no manifest was sent");
    assert.equal(await reg.digest("test/big", commit), undefined, "the commit is not tagged");
    assert.match(await logText(k, b.id), /stopping: cancelled by request/);
    // kilnd carries on: the same commit builds (the fast path again) once nothing holds its push.
    const again = await k.waitDone((await submit(commit)).id);
    assert.equal(again.state, BuildState.SUCCEEDED, again.error);
    assert.equal(again.fastPath, true);
  });
});
