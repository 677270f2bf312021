// The fly driver against a stand-in of the Fly Machines API (Fly itself cannot be reached from
// here): start, wait, state conflicts, timeouts, auth failures.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { isPermanentWakeError } from "../../src/scheduler/drivers/driver.js";
import { createFlyDriver } from "../../src/scheduler/drivers/fly.js";
import { createLogger } from "../../src/util/logger.js";
import { startFlyStandIn, type FlyStandIn } from "../helpers/fly-standin.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const TOKEN = "fly-api-token";

describe("fly machine driver", () => {
  let dir: string, fly: FlyStandIn, kilndUrl: string, closeKilnd: () => void;

  before(async () => {
    dir = tempDir("fly");
    writeFileSync(join(dir, "token"), `${TOKEN}\n`);
    writeFileSync(join(dir, "bad-token"), "wrong\n");
    fly = await startFlyStandIn(TOKEN, "kiln-builders", "148ed123");
    // The machine's kilnd answers health only while the machine is started.
    const k = createServer((_req, res) => {
      res.writeHead(fly.state === "started" ? 200 : 503);
      res.end();
    });
    await new Promise<void>((r) => k.listen(0, "127.0.0.1", r));
    kilndUrl = `http://127.0.0.1:${(k.address() as { port: number }).port}`;
    closeKilnd = () => k.close();
  });
  after(async () => {
    closeKilnd();
    await fly.close();
    removeTree(dir);
  });

  const driver = (tokenFile = "token") =>
    createFlyDriver("p", { driver: "fly", apiUrl: fly.url, app: "kiln-builders", machineId: "148ed123", apiTokenFile: join(dir, tokenFile), kilndUrl }, { logger: createLogger("silent"), backoffMs: 20, attempts: 4, waitSeconds: 1 });

  const reset = (state: FlyStandIn["state"]) => {
    fly.state = state;
    fly.requests.length = 0;
    fly.startFailures = [];
    fly.neverBoots = false;
  };

  test("a stopped machine is started, waited for until started, and kilnd's address returned", async () => {
    reset("stopped");
    assert.equal(await driver().wake(), kilndUrl);
    assert.equal(fly.state, "started");
    assert.deepEqual(fly.requests.slice(0, 2), ["POST /v1/apps/kiln-builders/machines/148ed123/start", "GET /v1/apps/kiln-builders/machines/148ed123/wait?state=started&timeout=1"]);
  });

  test("an already started machine: start is harmless and wake returns at once", async () => {
    reset("started");
    assert.equal(await driver().wake(), kilndUrl);
  });

  test("a 412 state conflict (machine replacing) is retried until the machine can start", async () => {
    reset("replacing");
    setTimeout(() => (fly.state = "stopped"), 150);
    assert.equal(await driver().wake(), kilndUrl);
    assert.ok(fly.requests.filter((r) => r.endsWith("/start")).length >= 2, "started again after the conflict");
    assert.ok(fly.requests.includes("GET /v1/apps/kiln-builders/machines/148ed123"), "looked at the machine's state");
  });

  test("a 409 conflict while the machine is stopping, and a 503, are transient", async () => {
    reset("stopping");
    fly.startFailures = [{ status: 503, error: "service unavailable" }];
    setTimeout(() => (fly.state = "stopped"), 100);
    assert.equal(await driver().wake(), kilndUrl);
  });

  test("a wait that times out (408) is retried", async () => {
    reset("stopped");
    fly.neverBoots = true;
    const wake = driver().wake();
    // Fly's wait blocks up to its timeout (1 s here) and answers 408; the machine boots later.
    setTimeout(() => (fly.state = "started"), 1500);
    assert.equal(await wake, kilndUrl);
    assert.ok(fly.requests.filter((r) => r.includes("/wait?")).length >= 2);
  });

  test("a machine that never boots ends in a clear error after the bounded retries", async () => {
    reset("stopped");
    fly.neverBoots = true;
    await assert.rejects(driver().wake(), /cannot wake Fly Machine 148ed123 after 4 attempts: 408 deadline_exceeded/);
  });

  test("an auth failure (401) is permanent: one request, no retries", async () => {
    reset("stopped");
    await assert.rejects(driver("bad-token").wake(), (e: unknown) => isPermanentWakeError(e) && /401 unauthorized/.test((e as Error).message));
    assert.equal(fly.requests.length, 1);
  });
});
