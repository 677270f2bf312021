// Slots and daemon options.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createSlots } from "../../src/util/slots.js";
import { isLoopback, parseDaemonOptions } from "../../src/config/options.js";
import { KilnError } from "../../src/errors/kiln-error.js";

describe("slots", () => {
  test("at most max run; waiters run in order; a cancelled wait leaves the queue", async () => {
    const slots = createSlots(1);
    const order: string[] = [];
    const a = await slots.acquire(new AbortController().signal);
    const ac = new AbortController();
    const b = slots.acquire(ac.signal).then((r) => (order.push("b"), r));
    const c = slots.acquire(new AbortController().signal).then((r) => (order.push("c"), r));
    assert.equal(slots.waiting, 2);
    ac.abort(new Error("cancelled"));
    await assert.rejects(b, /cancelled/);
    assert.equal(slots.waiting, 1);
    a();
    a(); // a second release of the same slot is a no-op
    const releaseC = await c;
    assert.deepEqual(order, ["c"]);
    assert.equal(slots.running, 1);
    releaseC();
    assert.equal(slots.running, 0);
  });

  test("run: at most max functions at once, each slot given back when its function settles, failures too", async () => {
    const slots = createSlots(2);
    let now = 0;
    let most = 0;
    const gates = Array.from({ length: 5 }, () => {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      return { promise, resolve };
    });
    const runs = gates.map((g, i) =>
      slots.run(async () => {
        most = Math.max(most, ++now);
        await g.promise;
        now--;
        if (i === 1) throw new Error("layer 1 failed");
        return i;
      }),
    );
    await new Promise((r) => setImmediate(r));
    assert.equal(slots.running, 2);
    assert.equal(slots.waiting, 3);
    gates.forEach((g) => g.resolve());
    const settled = await Promise.allSettled(runs);
    assert.deepEqual(settled.map((s) => s.status), ["fulfilled", "rejected", "fulfilled", "fulfilled", "fulfilled"]);
    assert.equal(most, 2);
    assert.equal(slots.running, 0);
    const ac = new AbortController();
    ac.abort(new Error("cancelled"));
    await assert.rejects(slots.run(async () => 1, ac.signal), /cancelled/);
  });
});

describe("kilnd options", () => {
  test("flags, environment and defaults", () => {
    const o = parseDaemonOptions(["--data", "/d", "--insecure-registry", "r:5000", "--insecure-registry", "s:5000"], { KILN_IDLE_TIMEOUT: "30", KILN_MAX_CONCURRENT_BUILDS: "2" });
    assert.ok(o !== "help");
    assert.equal(o.listenHost, "127.0.0.1");
    assert.equal(o.listenPort, 5456);
    assert.equal(o.idleTimeoutSec, 30);
    assert.equal(o.maxConcurrentBuilds, 2);
    assert.deepEqual(o.insecureRegistries, ["r:5000", "s:5000"]);
    const e = parseDaemonOptions([], { KILN_DATA: "/d", KILN_INSECURE_REGISTRY: "a:1,b:2", KILN_LISTEN: "127.0.0.2:7000" });
    assert.ok(e !== "help");
    assert.deepEqual(e.insecureRegistries, ["a:1", "b:2"]);
    assert.equal(e.listenPort, 7000);
    assert.equal(e.pushEngine, "kiln", "kiln pushes full builds unless told otherwise");
    const p = parseDaemonOptions(["--data", "/d"], { KILN_PUSH_ENGINE: "podman" });
    assert.ok(p !== "help" && p.pushEngine === "podman");
  });
  test("bad usage is an invalid_argument KilnError naming the flag", () => {
    assert.throws(() => parseDaemonOptions([], {}), (e: unknown) => e instanceof KilnError && e.code === "invalid_argument" && /--data/.test(e.message));
    assert.throws(() => parseDaemonOptions(["--data", "/d", "--idle-timeout", "soon"], {}), /--idle-timeout/);
    assert.throws(() => parseDaemonOptions(["--data", "/d", "--listen", "nope"], {}), /--listen/);
    assert.throws(() => parseDaemonOptions(["--data", "/d", "--listen", "10.0.0.1:5456"], {}), /loopback only/);
    assert.throws(() => parseDaemonOptions(["--data", "/d", "--bogus"], {}), KilnError);
    assert.throws(() => parseDaemonOptions(["--data", "/d", "--push-engine", "skopeo"], {}), /--push-engine: "skopeo" is not kiln or podman/);
    const withToken = parseDaemonOptions(["--data", "/d", "--listen", "[::]:5456", "--token-file", "/t"], {});
    assert.ok(withToken !== "help" && withToken.listenHost === "::");
  });
  test("loopback addresses", () => {
    for (const h of ["127.0.0.1", "127.1.2.3", "::1", "localhost"]) assert.ok(isLoopback(h), h);
    for (const h of ["0.0.0.0", "::", "10.0.0.1", "fdaa::3"]) assert.ok(!isLoopback(h), h);
  });
});
