// Idle exit: with --idle-timeout, kilnd exits 0 once nothing has happened for that long, and not
// while a build runs or a log stream is open. And how fast it answers after it starts.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { clientFor, startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { stalledLogReader } from "../../bench/lib/stalled-reader.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { freePort, waitFor } from "../helpers/wait.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const delay = (ms: number) => new Promise<"timeout">((r) => setTimeout(r, ms, "timeout"));

describe("idle exit", () => {
  let dir: string, reg: TestRegistry, base: string, repo: TestRepo;
  const kilnds: TestKilnd[] = [];
  const start = async (args: string[]) => {
    const k = await startKilnd({ data: join(dir, "data"), registry: reg.host, args: ["--idle-timeout", "2", ...args] });
    kilnds.push(k);
    return k;
  };

  before(async () => {
    dir = tempDir("idle");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), { Containerfile: `FROM ${base}\nCOPY n.txt /n.txt\nRUN sleep 4 && seq 1 3000\n`, "n.txt": "0\n" });
  });
  after(async () => {
    for (const k of kilnds) await k.stop();
    await reg?.stop();
    removeTree(dir);
  });

  const idleExits = () => {
    try {
      return (JSON.parse(readFileSync(join(dir, "data", "kilnd-state.json"), "utf8")) as { idleExits: number }).idleExits;
    } catch {
      return 0;
    }
  };

  const build = async (k: TestKilnd, r = repo) => {
    const sha = r.commit({ "n.txt": `${Date.now()}\n` });
    const { build: b } = await k.client.build({ project: "idle", source: { kind: { case: "git", value: { url: r.url, commit: sha } } }, image: `${reg.host}/test/idle` });
    return b!;
  };

  test("a build longer than the idle timeout holds kilnd awake; once it ends kilnd exits 0", async () => {
    const k = await start([]);
    const b = await build(k);
    // Nothing asks kilnd anything while the build runs (a call would count as activity): its
    // own log says how the build ended, 4+ s into a 2 s idle timeout. Had the build not held it
    // awake, kilnd would have stopped it on the way out, and the build would have ended FAILED.
    await k.waitOutput(new RegExp(`"build":"${b.id}".*"state":"[A-Z]+".*"msg":"build finished"`));
    assert.match(k.output(), new RegExp(`"build":"${b.id}".*"state":"SUCCEEDED".*"msg":"build finished"`));
    assert.doesNotMatch(k.output(), /"msg":"kilnd stopping"[\s\S]*"msg":"build finished"/, "the build finished before kilnd began to stop");
    const code = await Promise.race([k.exited, delay(20_000)]);
    assert.equal(code, 0);
    assert.match(k.output(), /"reason":"idle"/);
    assert.match(k.output(), /"msg":"kilnd exiting: idle"/);
  });

  test("an open log stream holds kilnd awake; when it closes kilnd exits 0, and counts the idle exits", async () => {
    // A log far larger than the socket buffers between kilnd and a reader that never reads
    // (about 20 MB as Connect JSON), so the stream really stays open.
    const chatty = makeRepo(join(dir, "chatty"), { Containerfile: `FROM ${base}\nCOPY n.txt /n.txt\nRUN seq 1 200000\n`, "n.txt": "0\n" });
    let k = await start(["--idle-timeout", "0"]);
    const b = await build(k, chatty);
    assert.equal((await k.waitDone(b.id)).state, BuildState.SUCCEEDED);
    await k.stop();
    const exitsBefore = idleExits();
    k = await start([]);
    // A reader that asks for the whole log and never reads: the stream stays open.
    const s = stalledLogReader(k.port, b.id);
    assert.equal(await Promise.race([k.exited, delay(5000)]), "timeout", "still awake 5 s into a 2 s idle timeout");
    s.destroy();
    assert.equal(await Promise.race([k.exited, delay(20_000)]), 0);
    const metrics = await (async () => {
      const again = await start(["--idle-timeout", "0"]);
      return (await fetch(`${again.addr}/metrics`)).text();
    })();
    assert.match(metrics, new RegExp(`^kiln_idle_exits_total ${exitsBefore + 1}$`, "m"), "one more idle exit; a SIGTERM stop is not one");
  });

  test("start-up to the first answered RPC is measured", async (t) => {
    const port = await freePort();
    const data = join(dir, "startup");
    const samples: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const p = spawn(process.execPath, ["dist/bin/kilnd.js", "--listen", `127.0.0.1:${port}`, "--data", data, "--idle-timeout", "0"], { cwd: ROOT, stdio: "ignore" });
      const client = clientFor(`http://127.0.0.1:${port}`);
      await waitFor(async () => (await client.getInfo({}).then(() => true, () => false)), 20_000, "kilnd to answer", 2);
      samples.push(performance.now() - t0);
      const exited = new Promise((r) => p.once("exit", (code) => r(code)));
      p.kill("SIGTERM");
      assert.equal(await exited, 0, "the bundled kilnd exits 0 on SIGTERM");
    }
    t.diagnostic(`kilnd (dist/bin/kilnd.js, the bundle) process start to first GetInfo answered: ${samples.map((s) => `${s.toFixed(0)} ms`).join(", ")}`);
    assert.equal(samples.length, 3);
  });
});
