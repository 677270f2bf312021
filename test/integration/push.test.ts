// The push under a registry that misbehaves: one that takes the upload and never answers ends
// the build FAILED at the push's deadline (the slot freed, kilnd serving); one that fails for a
// while (503) is tried again with backoff and the build succeeds; a kilnd killed mid-push leaves
// a record that says the push was where it stopped.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BuildState, Phase } from "../../src/gen/kiln/v1/builder_pb.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { logText, waitForLine } from "../helpers/logs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { startStallingProxy, type StallingProxy } from "../helpers/stalling-proxy.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const PUSH_TIMEOUT_SEC = 2;

describe("push against a misbehaving registry", () => {
  let dir: string, reg: TestRegistry, proxy: StallingProxy, k: TestKilnd, repo: TestRepo;
  const data = () => join(dir, "data");
  const start = () => startKilnd({ data: data(), registry: proxy.host, args: ["--insecure-registry", reg.host, "--fast-path", "off", "--push-timeout", String(PUSH_TIMEOUT_SEC)] });

  before(async () => {
    dir = tempDir("push");
    reg = await startRegistry(join(dir, "registry"));
    proxy = await startStallingProxy(reg.host);
    const base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), { Containerfile: `FROM ${base}\nCOPY data/ /data/\n`, "data/blob.bin": "1\n" });
    k = await start();
  });
  after(async () => {
    if (process.env.KILN_TEST_DEBUG) console.log(k?.output());
    await k?.stop();
    await proxy?.stop();
    await reg?.stop();
    if (dir) removeTree(dir);
  });

  const build = (commit: string) => k.buildCommit({ project: "push", url: repo.url, commit, image: `${proxy.host}/test/push` });

  test("a registry that takes the upload and never answers: FAILED at the deadline, naming it; the next build gets the slot", async (t) => {
    proxy.stall(true);
    const t0 = Date.now();
    const b = await build(repo.commit({ "data/blob.bin": randomBytes(64 * 1024).toString("base64") }));
    t.diagnostic(`ended after ${Date.now() - t0} ms (push deadline ${PUSH_TIMEOUT_SEC} s and a second per MiB)`);
    assert.equal(b.state, BuildState.FAILED);
    assert.match(b.error, new RegExp(`^push to ${proxy.host.replace(/\./g, "\\.")} did not finish within \\d+ s \\(${PUSH_TIMEOUT_SEC} s and a second per MiB of the [\\d.]+ MiB image\\): the registry stopped answering$`));
    assert.equal(b.phase, Phase.PUSH);
    proxy.stall(false);
    const next = await build(repo.commit({ "data/blob.bin": "after the stall\n" }));
    assert.equal(next.state, BuildState.SUCCEEDED, next.error);
    assert.equal(next.imageDigest, await reg.digest("test/push", next.commit));
  });

  test("a registry that fails uploads with 503 for a while: tried again with backoff, SUCCEEDED", async () => {
    proxy.failUploads(2, 503);
    const before = proxy.failed;
    const b = await build(repo.commit({ "data/blob.bin": randomBytes(1024).toString("base64") }));
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    assert.ok(proxy.failed - before >= 1, "the registry failed an upload");
    assert.equal(b.imageDigest, await reg.digest("test/push", b.commit));
    const log = await logText(k, b.id);
    assert.match(log, /push: the registry failed \(.*503.*\); trying again in 1 s/);
    assert.match(log, /push: kiln's push of \S+ from storage \(attempt 2 of 3\)/);
    assert.match(log, /push: kiln's push is done/);
  });

  test("a registry that keeps failing: FAILED after three attempts, with the registry's answer", async () => {
    proxy.failUploads(1000, 502);
    const before = proxy.failed;
    const b = await build(repo.commit({ "data/blob.bin": randomBytes(1024).toString("base64") }));
    proxy.failUploads(0, 502);
    assert.equal(b.state, BuildState.FAILED);
    assert.match(b.error, new RegExp(`^kiln's push to ${proxy.host.replace(/\./g, "\\.")} failed 3 times: .*HTTP 502`));
    assert.ok(proxy.failed - before >= 3, `${proxy.failed - before} uploads failed`);
  });

  test("kill -9 of kilnd during the push: after the restart the record says PUSH, interrupted", async () => {
    proxy.stall(true);
    const { build: b } = await k.client.build({ project: "push", source: { kind: { case: "git", value: { url: repo.url, commit: repo.commit({ "data/blob.bin": "killed\n" }) } } }, image: `${proxy.host}/test/push` });
    await proxy.held();
    // The final stage's layers go up while buildah still runs: the push itself comes after.
    await waitForLine(k.client, b!.id, "push: kiln's push of");
    await k.kill9();
    proxy.stall(false);
    k = await start();
    const after = (await k.client.getBuild({ buildId: b!.id })).build!;
    assert.equal(after.state, BuildState.FAILED);
    assert.match(after.error, /^interrupted/);
    assert.equal(Phase[after.phase], "PUSH");
  });
});
