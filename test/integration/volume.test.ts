// Volume care on real storage: label pruning, the 75% reset on a real small volume, the
// native-overlay check, and the metrics that report them.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, rmSync, statfsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { BuildState, type Build } from "../../src/gen/kiln/v1/builder_pb.js";
import { helloApp } from "../helpers/apps.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { kilndPodmanEnv } from "../helpers/leftovers.js";
import { logLines } from "../helpers/logs.js";
import { mountLoopVolume } from "../helpers/loop-volume.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { waitFor } from "../helpers/wait.js";

const podmanEnv = kilndPodmanEnv;

/** Tags of the images kiln built for a project, read from podman directly. */
function kilnTags(data: string, project: string): string[] {
  // One label filter only: podman ORs several of them.
  const out = execFileSync("podman", ["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", `label=kiln.project=${project}`], {
    env: podmanEnv(data),
    encoding: "utf8",
  });
  return out.split("\n").filter((l) => l && !l.includes("<none>")).sort();
}

describe("volume care", () => {
  let dir: string, reg: TestRegistry, base: string;
  const kilnds: TestKilnd[] = [];
  const start = async (o: Parameters<typeof startKilnd>[0]) => {
    const k = await startKilnd(o);
    kilnds.push(k);
    return k;
  };

  before(async () => {
    dir = tempDir("volume");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
  });
  after(async () => {
    for (const k of kilnds) await k.stop();
    await reg?.stop();
    removeTree(dir);
  });

  test("pruning keeps exactly the newest N images of a project and no base image; the dry run lists what the prune removes", async () => {
    const data = join(dir, "prune");
    const repo = makeRepo(join(dir, "prune-repo"), helloApp(base));
    // The full path for every build: this test is about the images podman leaves in storage (the
    // fast path would take the rebuild of a commit below, and make no local image).
    let kilnd = await start({ data, registry: reg.host, args: ["--keep-builds", "3", "--fast-path", "off"] });
    const build = async (project: string, commit: string) => {
      const { build: b } = await kilnd.client.build({ project, source: { kind: { case: "git", value: { url: repo.url, commit } } }, image: `${reg.host}/test/${project}` });
      const done = await kilnd.waitDone(b!.id);
      assert.equal(done.state, BuildState.SUCCEEDED, done.error);
      return done;
    };
    const shas: string[] = [];
    const images: { id: string; digest: string }[] = [];
    const buildIds: string[] = [];
    for (let i = 0; i < 5; i++) {
      shas.push(repo.commit({ "src/a.txt": `version ${i}\n` }));
      const b = await build("app", shas[i]!);
      images.push({ id: b.imageId, digest: b.imageDigest });
      buildIds.push(b.id);
    }
    await build("other", shas[0]!);
    const tag = (p: string, s: string) => `${reg.host}/test/${p}:${s}`;
    assert.deepEqual(kilnTags(data, "app"), shas.slice(2).map((s) => tag("app", s)).sort(), "the newest 3 of app");
    assert.deepEqual(kilnTags(data, "other"), [tag("other", shas[0]!)]);
    // kiln builds on the base pinned to its digest: that is the name it has in storage.
    const pinnedBase = `${base.replace(/:[^:/]+$/, "")}@${await reg.digest("base/busybox", "1")}`;
    execFileSync("podman", ["image", "exists", pinnedBase], { env: podmanEnv(data) }); // throws if gone
    assert.match(kilnd.output(), /"msg":"pruned superseded images"/);

    // Keep 1 from now on: the dry run lists the two older ones, the prune removes exactly them.
    await kilnd.stop();
    kilnd = await start({ data, registry: reg.host, args: ["--keep-builds", "1", "--fast-path", "off"] });
    const dry = await kilnd.client.prune({ project: "app", dryRun: true });
    assert.equal(dry.bytesFreed, 0n);
    assert.deepEqual(dry.images.map((i) => i.names[0]).sort(), [tag("app", shas[2]!), tag("app", shas[3]!)].sort());
    // The build that gave each image, from the records this kilnd read from the volume.
    assert.deepEqual(dry.images.map((i) => `${i.names[0]} ${i.buildId}`).sort(), [`${tag("app", shas[2]!)} ${buildIds[2]}`, `${tag("app", shas[3]!)} ${buildIds[3]}`].sort());
    assert.deepEqual(kilnTags(data, "app").length, 3, "a dry run removes nothing");
    const real = await kilnd.client.prune({ project: "app" });
    assert.deepEqual(real.images.map((i) => i.id).sort(), dry.images.map((i) => i.id).sort());
    assert.deepEqual(kilnTags(data, "app"), [tag("app", shas[4]!)]);
    assert.deepEqual(kilnTags(data, "other"), [tag("other", shas[0]!)], "another project is not touched");
    execFileSync("podman", ["image", "exists", pinnedBase], { env: podmanEnv(data) });

    // The kept image's layer cache is whole: building its commit again takes every step from the
    // cache (WORKDIR, COPY, RUN, COPY, RUN, CMD), kiln's label step too (its labels are the
    // commit's), and gives the same image.
    const again = await build("app", shas[4]!);
    assert.deepEqual([again.stepsTotal, again.stepsCached], [6, 6]);
    assert.deepEqual({ id: again.imageId, digest: again.imageDigest }, images[4], "a commit built again is the image it was, in storage and in the registry");

    // The prune after that build is housekeeping that follows its SUCCEEDED: a Prune call waits for it.
    assert.deepEqual((await kilnd.client.prune({ project: "app" })).images, [], "nothing new to remove");
    const storage = await kilnd.client.getStorage({});
    assert.equal(storage.kilnImages, 2);
    assert.equal(storage.keepBuilds, 1);
  });

  test("metrics parse as Prometheus text and report builds, prunes, the volume and the overlay", async () => {
    const kilnd = kilnds.at(-1)!;
    await waitFor(async () => (await kilnd.client.getStorage({})).overlay?.checked === true, 10_000, "the overlay check");
    // The gauge of builds whose work after their result still runs (the prune) comes back to 0.
    await waitFor(async () => /^kiln_builds_settling 0$/m.test(await (await fetch(`${kilnd.addr}/metrics`)).text()), 30_000, "every build's work after its result");
    const families = parsePrometheusTextFormat(await (await fetch(`${kilnd.addr}/metrics`)).text());
    const value = (name: string, labels: Record<string, string> = {}) => {
      const f = families.find((m) => m.name === name);
      assert.ok(f, `metric ${name}`);
      const s = f.metrics.filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
      assert.equal(s.length, 1, `one sample of ${name} ${JSON.stringify(labels)}: ${JSON.stringify(f.metrics)}`);
      return Number(s[0]!.value ?? s[0]!.count);
    };
    assert.equal(value("kiln_builds_total", { result: "succeeded" }), 1);
    assert.equal(value("kiln_storage_native_overlay"), 1);
    // The Prune call (2 images); the rebuild of a kept commit gave the image it was, and the
    // prunes after it had nothing to remove (a prune that removes nothing is not counted).
    assert.equal(value("kiln_prunes_total"), 1);
    assert.equal(value("kiln_pruned_images_total"), 2);
    assert.ok(value("kiln_volume_bytes", { kind: "total" }) > 0);
    assert.ok(value("kiln_volume_bytes", { kind: "free" }) > 0);
    assert.equal(value("kiln_builds_running"), 0);
    assert.equal(value("kiln_builds_settling"), 0);
    assert.equal(value("kiln_storage_resets_total"), 0);
    assert.equal(families.find((f) => f.name === "kiln_build_phase_seconds")?.type, "HISTOGRAM");
    assert.ok(families.some((f) => f.name === "kilnd_process_resident_memory_bytes"));
  });

  /** Builds commit after commit of an app that adds `mib` MiB of random data, until `stop` says so. */
  const fillVolume = async (kilnd: TestKilnd, repoDir: string, mib: number, t: { diagnostic(s: string): void }, stop: (resets: number, builds: Build[]) => boolean | Promise<boolean>) => {
    const repo = makeRepo(repoDir, {
      Containerfile: `FROM ${base}\nCOPY seed.txt /seed.txt\nRUN dd if=/dev/urandom of=/blob bs=1M count=${mib} 2>/dev/null && echo filled\n`,
      "seed.txt": "0\n",
    });
    const builds = [];
    for (let i = 1; i <= 16; i++) {
      const sha = repo.commit({ "seed.txt": `${i}\n` });
      const { build } = await kilnd.client.build({ project: "fill", source: { kind: { case: "git", value: { url: repo.url, commit: sha } } }, image: "localhost/test/fill" });
      const done = await kilnd.waitDone(build!.id);
      assert.equal(done.state, BuildState.SUCCEEDED, `build ${i}: ${done.error}`);
      builds.push(done);
      const s = await kilnd.client.getStorage({});
      t.diagnostic(`after build ${i}: volume ${s.volumeUsedPercent.toFixed(1)}% used, ${done.stepsCached}/${done.stepsTotal} steps cached, resets ${s.resets}`);
      if (await stop(s.resets, builds)) break;
    }
    return builds;
  };

  const resetReport = (kilnd: TestKilnd) => {
    const line = kilnd.output().split("\n").find((l) => l.includes('"msg":"container storage reset; the next build is a cold one"'));
    assert.ok(line, "kilnd logged the reset");
    return JSON.parse(line) as { durationMs: number; bytesFreed: number; reason: string };
  };

  /** Runs fn with an empty data directory on a real volume of sizeMiB, loop-mounted for it (skipped where loop mounts are not possible). */
  const onLoopVolume = async (t: TestContext, name: string, sizeMiB: number, fn: (mountPoint: string, data: string) => Promise<void>) => {
    const vol = mountLoopVolume(join(dir, name), sizeMiB);
    if (typeof vol === "string") return t.skip(vol);
    try {
      const data = join(vol.mountPoint, "data");
      mkdirSync(data);
      await fn(vol.mountPoint, data);
    } finally {
      vol.unmount();
    }
  };

  test("the keep policy keeps the images built most recently: a commit built again ranks by that build, not by its image's first one", async () => {
    const data = join(dir, "order");
    const repo = makeRepo(join(dir, "order-repo"), helloApp(base));
    const kilnd = await start({ data, registry: reg.host, args: ["--keep-builds", "2", "--fast-path", "off"] });
    const build = async (commit: string) => {
      const done = await kilnd.buildCommit({ project: "order", url: repo.url, commit, image: `${reg.host}/test/order` });
      assert.equal(done.state, BuildState.SUCCEEDED, done.error);
      // The Prune call waits for the prune that follows the build.
      await kilnd.client.prune({ project: "order" });
      return done;
    };
    const [a, b] = [repo.commit({ "src/a.txt": "a\n" }), repo.commit({ "src/a.txt": "b\n" })];
    const first = await build(a);
    await build(b);
    const again = await build(a);
    assert.equal(again.imageId, first.imageId, "a's image, from the cache");
    const c = repo.commit({ "src/a.txt": "c\n" });
    await build(c);
    // By the images' own times a (built first) would go; by their builds, b goes.
    const tag = (s: string) => `${reg.host}/test/order:${s}`;
    assert.deepEqual(kilnTags(data, "order"), [tag(a), tag(c)].sort());
    await kilnd.stop();
  });

  test("build records and logs are bounded: the newest N finished per project stay, older ones go with their logs", async () => {
    const data = join(dir, "records");
    const repo = makeRepo(join(dir, "records-repo"), helloApp(base));
    const kilnd = await start({ data, registry: reg.host, args: ["--keep-records", "2"] });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const b = await kilnd.buildCommit({ project: "rec", url: repo.url, commit: repo.commit({ "src/a.txt": `record ${i}\n` }), image: `${reg.host}/test/rec` });
      assert.equal(b.state, BuildState.SUCCEEDED, b.error);
      ids.push(b.id);
    }
    const other = await kilnd.buildCommit({ project: "rec-other", url: repo.url, commit: repo.head(), image: `${reg.host}/test/rec-other` });
    // The trim is the ending build's housekeeping, after its final record: wait for it.
    await waitFor(async () => (await kilnd.client.listBuilds({ project: "rec" })).builds.length === 2, 30_000, "the oldest records to go");
    assert.deepEqual((await kilnd.client.listBuilds({ project: "rec" })).builds.map((b) => b.id), ids.slice(2).reverse());
    assert.deepEqual((await kilnd.client.listBuilds({ project: "rec-other" })).builds.map((b) => b.id), [other.id], "another project keeps its own");
    assert.deepEqual(readdirSync(join(data, "logs")).sort(), [...ids.slice(2), other.id].map((id) => `${id}.log`).sort());
    assert.deepEqual(readdirSync(join(data, "builds")).sort(), [...ids.slice(2), other.id].map((id) => `${id}.json`).sort());
    await assert.rejects(kilnd.client.getBuild({ buildId: ids[0]! }), /no build/);
    const storage = await kilnd.client.getStorage({});
    assert.equal(storage.records, 3);
    assert.equal(storage.keepRecords, 2);
  });

  test("the 75% reset on a real 2 GiB volume: after the prune that leaves it over 75%, storage is reset; the next build succeeds cold; records and logs survive", async (t) => {
    await onLoopVolume(t, "loop75", 2048, async (mountPoint, data) => {
      // Someone else's data takes 62% of the volume; kiln's builds take it over 75%.
      execFileSync("fallocate", ["-l", `${Math.round(2048 * 0.62)}M`, join(mountPoint, "other-data")]);
      const kilnd = await start({ data, registry: reg.host, args: ["--keep-builds", "50"] });
      const logOf = (id: string) => logLines(kilnd, id);
      const pulledBase = async (b: Build) => (await logOf(b.id)).some((l) => l.startsWith("Trying to pull "));
      // The reset is housekeeping that follows a build (or precedes the next one), so which
      // GetStorage first sees it is a race; the build after it is known by what it does: it
      // pulls its base again. Fill until a build after the first one does.
      const builds = await fillVolume(kilnd, join(dir, "fill75"), 100, t, async (_resets, done) => done.length > 1 && (await pulledBase(done.at(-1)!)));
      const cold = builds.length - 1;
      assert.ok(cold >= 2, `the build after the reset pulled its base again (build ${cold + 1} of ${builds.length})`);
      for (let i = 1; i < cold; i++) assert.ok(!(await pulledBase(builds[i]!)), `before the reset, build ${i + 1}'s base came from the cache`);
      const report = resetReport(kilnd);
      assert.match(report.reason, /^volume \d+\.\d% used \(threshold 75%\) after prune$/);
      t.diagnostic(`reset (${report.reason}) took ${report.durationMs} ms and freed ${(report.bytesFreed / 2 ** 20).toFixed(0)} MiB`);
      const s = await kilnd.client.getStorage({});
      assert.ok(s.volumeUsedPercent < 75, `volume at ${s.volumeUsedPercent}% after the reset and one build`);
      assert.equal(s.resets, 1);
      assert.ok(s.lastResetTime);
      // The reset made the base layer store anew; the build after it marked it again for ext4's
      // allocator (storage/spread-dirs.ts), so the cold build's layers did not land among the
      // inodes the reset had just freed.
      for (const d of ["base-layers", "storage/overlay", "tmp"]) assert.match(execFileSync("lsattr", ["-d", join(data, d)], { encoding: "utf8" }).split(/\s+/)[0]!, /T/, `${d} is a top directory after the reset`);
      // The first build's record and log are still on the volume.
      const first = (await kilnd.client.getBuild({ buildId: builds[0]!.id })).build!;
      assert.equal(first.state, BuildState.SUCCEEDED);
      assert.ok((await logOf(first.id)).includes("filled"));
      assert.match(await (await fetch(`${kilnd.addr}/metrics`)).text(), /^kiln_storage_resets_total 1$/m);
      await kilnd.stop();
    });
  });

  test("a fast-path build adds no image and gets no prune, but the volume is still checked after it: over 75%, storage is reset", async (t) => {
    await onLoopVolume(t, "loopfast", 2048, async (mountPoint, data) => {
      let kilnd = await start({ data, registry: reg.host });
      const repo = makeRepo(join(dir, "fastfill-repo"), helloApp(base));
      const build = (commit: string) => kilnd.buildCommit({ project: "fastfill", url: repo.url, commit, image: `${reg.host}/test/fastfill` });
      const first = await build(repo.head());
      assert.equal(first.state, BuildState.SUCCEEDED, first.error);
      // The base is new to this volume: kiln's first build (fastpath/first-build.ts).
      assert.equal(first.fastPath, true);
      // Its housekeeping (the base's record, the check) is over once kilnd has stopped.
      await kilnd.stop();
      // Someone else's data takes the volume to 80% (as df counts it); kiln's next build adds little.
      const st = statfsSync(mountPoint);
      const used = (st.blocks - st.bfree) * st.bsize;
      const usable = used + st.bavail * st.bsize;
      execFileSync("fallocate", ["-l", String(Math.round(0.8 * usable - used)), join(mountPoint, "other-data")]);
      kilnd = await start({ data, registry: reg.host });
      const fast = await build(repo.commit({ "src/a.txt": "changed\n" }));
      assert.equal(fast.state, BuildState.SUCCEEDED, fast.error);
      assert.equal(fast.fastPath, true, (await logLines(kilnd, fast.id)).join("\n"));
      // The check is housekeeping that follows the build's result.
      await waitFor(async () => (await kilnd.client.getStorage({})).resets === 1, 60_000, "the reset after the fast-path build");
      assert.match(resetReport(kilnd).reason, /^volume \d+\.\d% used \(threshold 75%\) after a fast build$/);
      rmSync(join(mountPoint, "other-data"));
      // Storage is empty: the next build of the project succeeds (its fast path has no image to stand on).
      const next = await build(repo.commit({ "src/a.txt": "again\n" }));
      assert.equal(next.state, BuildState.SUCCEEDED, next.error);
      assert.equal((await kilnd.client.getStorage({})).resets, 1);
      await kilnd.stop();
    });
  });

  test("a build that runs out of space on a real 1 GiB volume resets storage and is built again, cold, instead of failing", async (t) => {
    await onLoopVolume(t, "loopfull", 1024, async (_mountPoint, data) => {
      // A threshold the volume never passes between builds: only running out of space can reset it.
      const kilnd = await start({ data, registry: reg.host, args: ["--keep-builds", "50", "--reset-threshold", "95"] });
      let resetAt = 0;
      const builds = await fillVolume(kilnd, join(dir, "fillfull"), 120, t, (resets, done) => {
        if (resets > 0 && !resetAt) resetAt = done.length;
        return resetAt > 0;
      });
      assert.ok(resetAt > 0, "a build ran out of space");
      const report = resetReport(kilnd);
      assert.equal(report.reason, "a build ran out of space");
      t.diagnostic(`reset (${report.reason}) took ${report.durationMs} ms and freed ${(report.bytesFreed / 2 ** 20).toFixed(0)} MiB`);
      const rebuilt = builds[resetAt - 1]!;
      assert.equal(rebuilt.state, BuildState.SUCCEEDED);
      assert.equal(rebuilt.stepsCached, 0);
      const lines = await logLines(kilnd, rebuilt.id);
      assert.ok(lines.some((l) => /no space left on device/i.test(l)));
      assert.ok(lines.includes("build: out of space; container storage was reset, building again from cold"));
      await kilnd.stop();
    });
  });

  test("the overlay check: native on a real disk, not native through fuse-overlayfs, said loudly", async () => {
    const fuse = execFileSync("sh", ["-c", "command -v fuse-overlayfs || true"], { encoding: "utf8" }).trim();
    assert.ok(fuse, "fuse-overlayfs is installed by scripts/setup.sh");
    const kilnd = await start({ data: join(dir, "fuse"), registry: reg.host, args: ["--overlay-mount-program", fuse] });
    await waitFor(async () => (await kilnd.client.getStorage({})).overlay?.checked === true, 10_000, "the overlay check");
    const o = (await kilnd.client.getStorage({})).overlay!;
    assert.equal(o.native, false);
    assert.match(o.reason, /fuse-overlayfs/);
    assert.match(o.fix, /mount a volume/);
    assert.match(kilnd.output(), /container storage is NOT on native overlay/);
    assert.match(await (await fetch(`${kilnd.addr}/metrics`)).text(), /^kiln_storage_native_overlay 0$/m);
  });
});
