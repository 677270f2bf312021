// The scheduler end to end with the local driver: signed webhooks in, a real kilnd woken for
// each build and put to sleep after, a real registry, real git repositories.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { DeploymentState, type Deployment } from "../../src/gen/kiln/v1/scheduler_pb.js";
import { loadSchedulerConfig } from "../../src/scheduler/config.js";
import { startScheduler, type RunningScheduler } from "../../src/scheduler/server.js";
import { createLogger } from "../../src/util/logger.js";
import { msFromTimestamp } from "../../src/util/time.js";
import { helloApp } from "../helpers/apps.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { processesWith } from "../helpers/leftovers.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { freePort, waitFor } from "../helpers/wait.js";

const SECRET = "webhook-secret-for-tests";

describe("scheduler with the local driver", () => {
  let dir: string, reg: TestRegistry, base: string, repo: TestRepo, sched: RunningScheduler, url: string, configFile: string;
  const machineData = () => join(dir, "machine");

  const start = async () => {
    sched = await startScheduler(loadSchedulerConfig(configFile), createLogger("silent"), { backoffMs: 50 });
    url = `http://127.0.0.1:${sched.server.address.port}`;
  };

  before(async () => {
    dir = tempDir("sched");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), helloApp(base));
    writeFileSync(join(dir, "secret"), `${SECRET}\n`);
    configFile = join(dir, "scheduler.json");
    writeFileSync(
      configFile,
      JSON.stringify({
        listen: `127.0.0.1:${await freePort()}`,
        data: "state",
        webhookSecretFile: "secret",
        projects: [
          {
            name: "hello",
            git: repo.url,
            github: "acme/hello",
            branch: "main",
            image: `${reg.host}/test/sched`,
            machine: { driver: "local", data: "machine", idleTimeout: 2, insecureRegistries: [reg.host] },
          },
        ],
      }),
    );
    await start();
  });
  after(async () => {
    await sched?.stop();
    await reg?.stop();
    removeTree(dir);
  });

  const push = (commit: string, o: { secret?: string | null; event?: string; ref?: string; body?: string; before?: string; delivery?: string } = {}) => {
    const body = o.body ?? JSON.stringify({ ref: o.ref ?? "refs/heads/main", after: commit, ...(o.before ? { before: o.before } : {}), deleted: false, repository: { full_name: "acme/hello" } });
    const headers: Record<string, string> = { "content-type": "application/json", "x-github-event": o.event ?? "push" };
    if (o.delivery) headers["x-github-delivery"] = o.delivery;
    if (o.secret !== null) headers["x-hub-signature-256"] = `sha256=${createHmac("sha256", o.secret ?? SECRET).update(body).digest("hex")}`;
    return fetch(`${url}/webhooks/github`, { method: "POST", headers, body });
  };

  const deployed = async (res: Response) => {
    assert.equal(res.status, 202);
    const { deployment } = (await res.json()) as { deployment: string };
    assert.ok(deployment, "a deployment was accepted");
    return deployment;
  };

  const waitFinal = async (id: string, asleep = true) => {
    let d: Deployment | undefined;
    await waitFor(async () => {
      d = await sched.scheduler.get(id);
      const final = d.state === DeploymentState.SUCCEEDED || d.state === DeploymentState.FAILED || d.state === DeploymentState.SUPERSEDED;
      return final && (!asleep || d.times?.machineAsleep !== undefined || !d.times?.machineReady);
    }, 180_000, `deployment ${id}`, 50);
    return d!;
  };

  const kilndAlive = () => processesWith(`--data ${machineData()}`).length > 0;
  const kilndLog = () => readFileSync(join(machineData(), "kilnd.log"), "utf8");
  const ms = (d: Deployment) => {
    const t = d.times!;
    const r = msFromTimestamp(t.received)!;
    return `webhook→ready ${msFromTimestamp(t.machineReady)! - r} ms, →build started ${msFromTimestamp(t.buildStarted)! - r} ms, →digest pushed ${msFromTimestamp(t.digestPushed)! - r} ms, →asleep ${msFromTimestamp(t.machineAsleep)! - r} ms, awake ${t.awake ? Number(t.awake.seconds) * 1000 + t.awake.nanos / 1e6 : "?"} ms`;
  };

  test("a signed push webhook deploys: the registry has the digest, and kilnd goes to sleep (exit 0) right after", async (t) => {
    assert.ok(!kilndAlive(), "the machine sleeps at the start");
    const sha = repo.head();
    const d = await waitFinal(await deployed(await push(sha)));
    assert.equal(d.state, DeploymentState.SUCCEEDED, d.error);
    assert.equal(d.imageDigest, await reg.digest("test/sched", sha));
    assert.equal(d.image, `${reg.host}/test/sched:${sha}`);
    assert.equal(d.trigger, "webhook");
    assert.equal(d.attempts, 1);
    assert.ok(d.times?.machineAsleep, "the machine went to sleep");
    assert.ok(!kilndAlive());
    assert.match(kilndLog(), /"msg":"kilnd exiting: sleep"/);
    // The scheduler asked for sleep right after the result: kilnd finished the fast path's record first.
    const said = kilndLog()
      .split("\n")
      .flatMap((l) => (l.startsWith("{") ? [JSON.parse(l) as { build?: string; msg?: string }] : []));
    const recorded = said.findIndex((l) => l.build === d.buildId && l.msg?.startsWith("fast path: "));
    assert.match(said[recorded]?.msg ?? "", /^fast path: the next build of a source change can start from this one/);
    assert.ok(recorded < said.findIndex((l) => l.msg === "kilnd exiting: sleep"), "before kilnd went to sleep");
    t.diagnostic(`cold: ${ms(d)}`);
  });

  test("a second push wakes the machine again and the build is warm, from the same volume", async (t) => {
    const sha = repo.commit({ "src/a.txt": "second\n" });
    const d = await waitFinal(await deployed(await push(sha)));
    assert.equal(d.state, DeploymentState.SUCCEEDED, d.error);
    assert.equal(d.stepsCached, 3, "WORKDIR, COPY static/, RUN echo from cache");
    const build = JSON.parse(readFileSync(join(machineData(), "builds", `${d.buildId}.json`), "utf8")) as { fastPath?: boolean };
    assert.equal(build.fastPath, true, "the fast path, on the base recorded before the machine slept");
    assert.equal(d.imageDigest, await reg.digest("test/sched", sha));
    assert.equal(kilndLog().match(/"msg":"kilnd serving"/g)?.length, 2, "woken twice");
    assert.ok(!kilndAlive());
    t.diagnostic(`warm: ${ms(d)}`);
  });

  test("three pushes in quick succession: only the newest is built, the others superseded", async () => {
    const shas = [1, 2, 3].map((i) => repo.commit({ "src/a.txt": `burst ${i}\n` }));
    const ids = [];
    for (const sha of shas) ids.push(await deployed(await push(sha)));
    const last = await waitFinal(ids[2]!);
    assert.equal(last.state, DeploymentState.SUCCEEDED, last.error);
    for (const id of ids.slice(0, 2)) {
      const d = await sched.scheduler.get(id);
      assert.equal(d.state, DeploymentState.SUPERSEDED, `${id}: ${d.error}`);
      assert.match(d.supersededBy, /^[a-z0-9-]+$/);
    }
    for (const sha of shas.slice(0, 2)) assert.equal(await reg.digest("test/sched", sha), undefined, "a superseded commit is never pushed");
    assert.equal(last.imageDigest, await reg.digest("test/sched", shas[2]!));
  });

  test("the same delivery twice (GitHub's retry) is one deployment", async () => {
    const sha = repo.commit({ "src/a.txt": "delivered twice\n" });
    const before = (await sched.scheduler.list(undefined, 0)).length;
    const first = await (await push(sha, { delivery: "5a4c1e2e-0000-4000-8000-000000000001" })).json() as { deployment: string };
    const again = await (await push(sha, { delivery: "5a4c1e2e-0000-4000-8000-000000000001" })).json() as { deployment: string; duplicate?: boolean };
    assert.equal(again.deployment, first.deployment);
    assert.equal(again.duplicate, true);
    assert.equal((await sched.scheduler.list(undefined, 0)).length, before + 1);
    const d = await waitFinal(first.deployment);
    assert.equal(d.state, DeploymentState.SUCCEEDED, d.error);
  });

  test("two pushes of the branch delivered out of order: the older is not deployed and does not supersede the newer", async () => {
    const base0 = repo.head();
    const older = repo.commit({ "src/a.txt": "older push\n" });
    const newer = repo.commit({ "src/a.txt": "newer push\n" });
    const newerId = await deployed(await push(newer, { before: older, delivery: "5a4c1e2e-0000-4000-8000-000000000002" }));
    const lateRes = await push(older, { before: base0, delivery: "5a4c1e2e-0000-4000-8000-000000000003" });
    const late = (await lateRes.json()) as { deployment: string; superseded?: string };
    assert.match(late.superseded ?? "", new RegExp(`older commit of the branch than ${newer}`));
    const d = await waitFinal(newerId);
    assert.equal(d.state, DeploymentState.SUCCEEDED, d.error);
    assert.equal(d.imageDigest, await reg.digest("test/sched", newer));
    const skipped = await sched.scheduler.get(late.deployment);
    assert.equal(skipped.state, DeploymentState.SUPERSEDED);
    assert.equal(skipped.supersededBy, newerId);
    assert.equal(skipped.buildId, "", "never built");
    assert.equal(await reg.digest("test/sched", older), undefined);
  });

  test("pushes with a gap between them (a delivery still in flight): kilnd's git orders them; the older is never deployed and the newer always is", async () => {
    const base0 = repo.head();
    const [c1, c2, c3] = [1, 2, 3].map((i) => repo.commit({ "src/a.txt": `gap ${i}\n` }));
    // Push 3 arrives first: its before (c2) is unknown, so git says whether it is newer than the head.
    const id3 = await deployed(await push(c3!, { before: c2 }));
    const d3 = await waitFinal(id3);
    assert.equal(d3.state, DeploymentState.SUCCEEDED, d3.error);
    // Push 1, whose before is behind a gap too: git says it is an ancestor of c3.
    const id1 = await deployed(await push(c1!, { before: base0 }));
    const d1 = await waitFinal(id1);
    assert.equal(d1.state, DeploymentState.SUPERSEDED, d1.error);
    assert.equal(d1.supersededBy, id3);
    assert.match(d1.error, new RegExp(`older commit of the branch than ${c3} \\(git: its ancestor\\)`));
    assert.equal(d1.buildId, "", "never built");
    // Push 2 at last: push 3 named it as its before, so it is stale on arrival.
    const late = (await (await push(c2!, { before: c1 })).json()) as { superseded?: string };
    assert.match(late.superseded ?? "", new RegExp(`older commit of the branch than ${c3}`));
    for (const c of [c1!, c2!]) assert.equal(await reg.digest("test/sched", c), undefined);
    assert.equal(await reg.digest("test/sched", c3!), d3.imageDigest);
  });

  test("a bad signature, a missing one and a malformed body are refused and change nothing; other events and branches are ignored", async () => {
    const before = (await sched.scheduler.list(undefined, 0)).length;
    const sha = repo.head();
    assert.equal((await push(sha, { secret: "wrong" })).status, 401);
    assert.equal((await push(sha, { secret: null })).status, 401);
    assert.equal((await push(sha, { body: "{not json" })).status, 400);
    assert.equal((await push(sha, { body: JSON.stringify({ ref: "refs/heads/main", after: "nope", repository: { full_name: "acme/hello" } }) })).status, 400);
    const ping = await push(sha, { event: "ping" });
    assert.equal(ping.status, 202);
    assert.match(((await ping.json()) as { ignored: string }).ignored, /not a push/);
    const other = await push(sha, { ref: "refs/heads/feature" });
    assert.equal(other.status, 202);
    assert.match(((await other.json()) as { ignored: string }).ignored, /no project/);
    assert.equal((await sched.scheduler.list(undefined, 0)).length, before);
    assert.ok(!kilndAlive(), "nothing woke the machine");
  });

  test("kill -9 of kilnd in the middle of a build: exactly one retry, which succeeds", async () => {
    const sha = repo.commit({ Containerfile: `FROM ${base}\nCOPY src/ /src/\nRUN echo before-sleep && sleep 3 && echo after-sleep\n`, "src/a.txt": "killed\n" });
    const id = await deployed(await push(sha));
    // The RUN step is running once the deployment's build log on the machine's volume says so.
    const buildLog = async () => join(machineData(), "logs", `${(await sched.scheduler.get(id)).buildId}.log`);
    await waitFor(async () => (await sched.scheduler.get(id)).buildId !== "" && existsSync(await buildLog()) && readFileSync(await buildLog(), "utf8").includes("before-sleep"), 60_000, "the RUN step", 50);
    const pids = processesWith(`--data ${machineData()}`).map((p) => Number(p.split(":")[0]));
    assert.ok(pids.length > 0);
    for (const pid of pids) process.kill(pid, "SIGKILL");
    const d = await waitFinal(id);
    assert.equal(d.state, DeploymentState.SUCCEEDED, d.error);
    assert.equal(d.attempts, 2, "one retry");
    assert.equal(d.imageDigest, await reg.digest("test/sched", sha));
  });

  test("an accepted commit survives a scheduler restart and is deployed by the next one", async () => {
    const sha = repo.commit({ Containerfile: `FROM ${base}\nCOPY src/ /src/\n`, "src/a.txt": "across a restart\n" });
    const id = await deployed(await push(sha));
    await sched.stop(); // right away: the deployment is on disk, its build perhaps begun
    await start();
    const d = await waitFinal(id);
    assert.equal(d.state, DeploymentState.SUCCEEDED, d.error);
    assert.equal(d.imageDigest, await reg.digest("test/sched", sha));
  });
});
