// The builder machine image: built with podman by kiln's own script, run --privileged with a
// named volume at the storage root, driven from outside through the API.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { helloApp } from "../helpers/apps.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { clientFor } from "../helpers/kilnd.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { freePort, waitFor } from "../helpers/wait.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const STATE = process.env.KILN_STATE ?? join(ROOT, ".kiln-demo");
// The scripts' podman configuration (scripts/lib.sh: use_script_podman), which built the image.
const podmanEnv = {
  ...process.env,
  CONTAINERS_CONF: join(STATE, "podman/containers.conf"),
  CONTAINERS_STORAGE_CONF: join(STATE, "podman/storage.conf"),
  CONTAINERS_REGISTRIES_CONF: join(STATE, "podman/registries.conf"),
};
// stderr is kept out of the test output (podman complains there that this host has no systemd
// to time health checks) but is part of the error when a command fails.
const podman = (...args: string[]) => execFileSync("podman", args, { env: podmanEnv, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();

describe("builder machine image", () => {
  let dir: string, reg: TestRegistry, base: string, repo: TestRepo, image: string;
  const volume = `kiln-test-${process.pid}`;
  const containers: string[] = [];

  before(async () => {
    const r = spawnSync(join(ROOT, "scripts/builder-image.sh"), { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    image = r.stdout.trim().split("\n").at(-1)!;
    dir = tempDir("image");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), helloApp(base));
  });
  after(async () => {
    for (const c of containers) spawnSync("podman", ["rm", "-f", c], { env: podmanEnv });
    spawnSync("podman", ["volume", "rm", "-f", volume], { env: podmanEnv });
    await reg?.stop();
    removeTree(dir);
  });

  /** Starts a builder container; resolves with its client once kilnd answers. */
  const run = async (name: string, extra: string[], kilndArgs: string[] = []) => {
    const port = await freePort();
    const t0 = performance.now();
    podman("run", "-d", "--name", name, "--privileged", "--network", "host", "-e", `KILN_LISTEN=127.0.0.1:${port}`, "-v", `${repo.dir}:${repo.dir}:ro`, ...extra, image, "--idle-timeout", "0", "--insecure-registry", reg.host, ...kilndArgs);
    containers.push(name);
    const client = clientFor(`http://127.0.0.1:${port}`);
    await waitFor(async () => (await client.getInfo({}).then(() => true, () => false)), 30_000, "kilnd in the container", 10);
    return { client, startMs: performance.now() - t0 };
  };
  const build = async (client: ReturnType<typeof clientFor>, commit: string) => {
    const { build: b } = await client.build({ project: "app", source: { kind: { case: "git", value: { url: repo.url, commit } } }, image: `${reg.host}/test/image-app` });
    let final;
    const lines: string[] = [];
    for await (const m of client.streamLogs({ buildId: b!.id, follow: true })) {
      if (m.event.case === "build") final = m.event.value;
      else if (m.event.case === "line") lines.push(m.event.value.text);
    }
    return { ...final!, log: lines.join("\n") };
  };

  test("with a volume at the storage root: native overlay, a real build, exit 0 on SIGTERM, the cache kept across a restart", async (t) => {
    t.diagnostic(`image ${image}: ${(Number(podman("image", "inspect", "--format", "{{.Size}}", image)) / 2 ** 20).toFixed(0)} MiB`);
    podman("volume", "create", volume);
    const first = await run(`${volume}-a`, ["-v", `${volume}:/var/lib/kiln`]);
    t.diagnostic(`container start → first RPC answered: ${first.startMs.toFixed(0)} ms`);
    await waitFor(async () => (await first.client.getStorage({})).overlay?.checked === true, 10_000, "the overlay check");
    assert.equal((await first.client.getStorage({})).overlay?.native, true);
    podman("healthcheck", "run", `${volume}-a`); // the image's HEALTHCHECK passes (throws if not)
    const cold = await build(first.client, repo.head());
    assert.equal(cold.state, BuildState.SUCCEEDED, cold.error);
    assert.equal(cold.imageDigest, await reg.digest("test/image-app", repo.head()));
    t.diagnostic(`cold build in the container: ${Number(cold.durations!.total!.seconds) * 1000 + cold.durations!.total!.nanos / 1e6} ms`);
    podman("stop", "-t", "10", `${volume}-a`);
    assert.equal(podman("inspect", "--format", "{{.State.ExitCode}}", `${volume}-a`), "0", "SIGTERM while idle ends kilnd with exit 0");

    const second = await run(`${volume}-b`, ["-v", `${volume}:/var/lib/kiln`]);
    const sha = repo.commit({ "src/a.txt": "after a restart\n" });
    const warm = await build(second.client, sha);
    assert.equal(warm.state, BuildState.SUCCEEDED, warm.error);
    // The first container's log is read only when the assertion is about to fail.
    const why = warm.stepsCached === 3 ? "" : `; the build's log:\n${warm.log}\nthe first container's log:\n${podman("logs", `${volume}-a`)}`;
    assert.equal(warm.stepsCached, 3, `the volume kept the layer cache${why}`);
    assert.equal(warm.imageDigest, await reg.digest("test/image-app", sha));
    t.diagnostic(`warm build in the container: ${Number(warm.durations!.total!.seconds) * 1000 + warm.durations!.total!.nanos / 1e6} ms`);
    podman("stop", "-t", "10", `${volume}-b`);
  });

  test("without a volume, storage on the container's own overlay: kilnd still works and reports non-native overlay", async () => {
    const { client } = await run(`${volume}-c`, [], ["--data", "/srv/kiln-on-overlay"]);
    await waitFor(async () => (await client.getStorage({})).overlay?.checked === true, 10_000, "the overlay check");
    const o = (await client.getStorage({})).overlay!;
    assert.equal(o.native, false);
    assert.match(o.reason, /not native|overlay/);
    assert.match(podman("logs", `${volume}-c`), /container storage is NOT on native overlay/);
    const b = await build(client, repo.head());
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
  });
});
