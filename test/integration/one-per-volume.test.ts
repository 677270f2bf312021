// One kilnd per volume: a second kilnd on a data directory in use exits with code 3 and leaves
// the first one's build alone; a scheduler killed with SIGKILL leaves its kilnd running, and the
// restarted scheduler drives that kilnd instead of starting a second one (the commit is built once).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { DeploymentState, SchedulerService } from "../../src/gen/kiln/v1/scheduler_pb.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { processesWith } from "../helpers/leftovers.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { freePort, waitFor } from "../helpers/wait.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const SECRET = "one-per-volume-secret";

describe("one kilnd per volume", () => {
  let dir: string, reg: TestRegistry, base: string, repo: TestRepo;

  before(async () => {
    dir = tempDir("one-volume");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), {
      Containerfile: `FROM ${base}\nCOPY a.txt /a.txt\nRUN echo before-sleep && sleep 3 && echo after-sleep\n`,
      "a.txt": "1\n",
    });
  });
  after(async () => {
    await reg?.stop();
    removeTree(dir);
  });

  test("a second kilnd on a data directory in use exits 3 and names the first; the first one's build is untouched", async () => {
    const data = join(dir, "data");
    const first: TestKilnd = await startKilnd({ data, registry: reg.host });
    try {
      const { build } = await first.client.build({
        project: "one",
        source: { kind: { case: "git", value: { url: repo.url, commit: repo.head() } } },
        image: `${reg.host}/test/one`,
      });
      // The build is in its RUN step when the second kilnd comes.
      for await (const m of first.client.streamLogs({ buildId: build!.id, follow: true })) if (m.event.case === "line" && m.event.value.text === "before-sleep") break;
      symlinkSync(data, join(dir, "data-link"));
      for (const spelling of [data, join(dir, "data-link"), `${data}/.`]) {
        const second = spawn(process.execPath, ["--import", "tsx", `${ROOT}src/bin/kilnd.ts`, "--listen", `127.0.0.1:${await freePort()}`, "--data", spelling, "--insecure-registry", reg.host], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        second.stdout.on("data", (d) => (out += d));
        second.stderr.on("data", (d) => (out += d));
        const code = await new Promise((res) => second.once("exit", res));
        assert.equal(code, 3, out);
        assert.match(out, new RegExp(`is in use by kilnd pid ${first.proc.pid}, serving on 127\\.0\\.0\\.1:${first.port}: one kilnd per volume`));
      }
      const done = await first.waitDone(build!.id);
      assert.equal(done.state, BuildState.SUCCEEDED, done.error);
      assert.equal(done.imageDigest, await reg.digest("test/one", repo.head()));
    } finally {
      await first.stop();
    }
    // Once the first has stopped, the volume is free again (no stale lock).
    const again = await startKilnd({ data, registry: reg.host });
    assert.equal((await again.client.listBuilds({ project: "one" })).builds.length, 1);
    await again.stop();
  });

  test("kill -9 of the scheduler mid-build: its kilnd keeps building, the restarted scheduler drives it, the commit is built once", async () => {
    const listen = `127.0.0.1:${await freePort()}`;
    writeFileSync(join(dir, "secret"), `${SECRET}\n`);
    const configFile = join(dir, "scheduler.json");
    writeFileSync(
      configFile,
      JSON.stringify({
        listen,
        data: "sched-state",
        webhookSecretFile: "secret",
        projects: [{ name: "sched", git: repo.url, github: "acme/one", branch: "main", image: `${reg.host}/test/sched-one`, machine: { driver: "local", data: "machine", idleTimeout: 30, insecureRegistries: [reg.host] } }],
      }),
    );
    const startScheduler = () => {
      const p = spawn(process.execPath, ["--import", "tsx", `${ROOT}src/bin/kiln-scheduler.ts`, "--config", configFile], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      const exited = new Promise((res) => p.once("exit", res));
      // Its own log says when it serves: waited for, not polled.
      const serving = new Promise<void>((resolve, reject) => {
        const see = (d: Buffer) => {
          out += d;
          if (out.includes('"msg":"kiln-scheduler serving"')) resolve();
        };
        p.stdout.on("data", see);
        p.stderr.on("data", see);
        void exited.then(() => reject(new Error(`kiln-scheduler exited at start:\n${out}`)));
      });
      return { p, exited, serving, output: () => out };
    };
    const client = createClient(SchedulerService, createConnectTransport({ baseUrl: `http://${listen}`, httpVersion: "1.1" }));

    const sha = repo.commit({ "a.txt": "scheduler\n" });
    let sched = startScheduler();
    await sched.serving;
    const body = JSON.stringify({ ref: "refs/heads/main", after: sha, deleted: false, repository: { full_name: "acme/one" } });
    const res = await fetch(`http://${listen}/webhooks/github`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-github-event": "push", "x-hub-signature-256": `sha256=${createHmac("sha256", SECRET).update(body).digest("hex")}` },
      body,
    });
    assert.equal(res.status, 202);
    const { deployment } = (await res.json()) as { deployment: string };
    for await (const m of client.followDeployment({ deploymentId: deployment })) if (m.event.case === "line" && m.event.value.text === "before-sleep") break;
    const kilnds = () => processesWith(`--data ${join(dir, "machine")}`).filter((p) => p.includes("kilnd"));
    const [kilnd] = kilnds();
    assert.ok(kilnd, "a kilnd serves the machine's volume");

    sched.p.kill("SIGKILL");
    await sched.exited;
    assert.deepEqual(kilnds(), [kilnd], "kilnd lives on without its scheduler");
    sched = startScheduler();
    try {
      await sched.serving;
      let state = DeploymentState.UNSPECIFIED;
      for await (const m of client.followDeployment({ deploymentId: deployment })) if (m.event.case === "deployment") state = m.event.value.state;
      const d = (await client.getDeployment({ deploymentId: deployment })).deployment!;
      assert.equal(state, DeploymentState.SUCCEEDED, d.error);
      assert.equal(d.imageDigest, await reg.digest("test/sched-one", sha));
      const log = readFileSync(join(dir, "machine", "kilnd.log"), "utf8");
      assert.equal(log.match(/"msg":"kilnd serving"/g)?.length, 1, "one kilnd, started once");
      assert.doesNotMatch(log, /one kilnd per volume/, "no second kilnd tried the volume");
    } finally {
      sched.p.kill("SIGTERM");
      await sched.exited;
    }
    await waitFor(() => kilnds().length === 0, 20_000, "the machine to go to sleep");
    const k = await startKilnd({ data: join(dir, "machine"), registry: reg.host });
    const builds = (await k.client.listBuilds({ project: "sched" })).builds;
    await k.stop();
    assert.deepEqual(builds.map((b) => b.commit), [sha], "the commit was built once");
  });
});
