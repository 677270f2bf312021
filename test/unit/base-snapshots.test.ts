// The fast path's base store keeps the snapshots of kiln's own steps that a base stands on and
// sweeps the rest: a later save keeps only what its parents name; forgetting the base removes them all.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { createBaseStore, type CopyBase, type FastPathBase } from "../../src/fastpath/base.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { waitFor } from "../helpers/wait.js";

const dir = tempDir("base-snapshots");
after(() => removeTree(dir));

/** Upper directories of a build, as runSteps leaves them in the build's own directory. */
function uppers(build: string, n: number): string[] {
  return Array.from({ length: n }, (_, k) => {
    const u = join(dir, "tmp", build, `u${k}`);
    mkdirSync(join(u, "app"), { recursive: true });
    writeFileSync(join(u, "app", `from-${build}-${k}`), "x");
    return u;
  });
}

const start = (layers?: string[]): CopyBase =>
  ({ plan: { copyStep: 5 }, dest: "/app/", ancestors: [], owner: { uid: 0, gid: 0 }, copies: [], parent: { id: "img", env: [], user: "", workdir: "/app", ...(layers ? { layers } : {}) } }) as unknown as CopyBase;

const base = (copy: CopyBase, starts: CopyBase[] = []): Omit<FastPathBase, "version"> =>
  ({ key: "k", commit: "c", containerfileDigest: "d", ignoreDigest: "i", reads: { reads: [], mounts: [], steps: 1, onbuild: 0 }, copy, starts, manifest: {}, config: { rootfs: { type: "layers", diff_ids: [] } }, baseImages: [] }) as unknown as Omit<FastPathBase, "version">;

test("a save keeps the snapshots its parents name, moved out of the build's directory, and sweeps the others", async () => {
  const store = createBaseStore(join(dir, "fastpath"));
  const root = join(dir, "fastpath", "snapshots", "p");
  const first = await store.keepSnapshots("p", "b1", uppers("b1", 2));
  assert.deepEqual(first, [join(root, "b1", "0"), join(root, "b1", "1")]);
  assert.ok(existsSync(join(first[1]!, "app", "from-b1-1")), "the upper's files moved with it");
  assert.ok(!existsSync(join(dir, "tmp", "b1", "u0")), "moved, not copied");
  await store.save("p", base(start(first)));
  // A second build stands on the first's snapshots and adds its own (a chain): both stay.
  const second = await store.keepSnapshots("p", "b2", uppers("b2", 1));
  await store.save("p", base(start([...first, ...second])));
  // An orphan (its build never saved a base) goes with the next save.
  await store.keepSnapshots("p", "b3", uppers("b3", 1));
  await store.save("p", base(start(first), [start(second)]));
  await waitFor(() => !existsSync(join(root, "b3")), 5000, "the orphan to be swept");
  assert.deepEqual(readdirSync(root).sort(), ["b1", "b2"]);
  // A base that stands on none of them (a full build's) sweeps them all.
  await store.save("p", base(start()));
  await waitFor(() => readdirSync(root).length === 0, 5000, "every snapshot to be swept");
  assert.ok((await store.load("p"))?.copy, "the base itself is there");
});

test("forgetting a base removes its snapshots; another project's stay", async () => {
  const store = createBaseStore(join(dir, "fastpath2"));
  const q = await store.keepSnapshots("q", "b1", uppers("q1", 1));
  const r = await store.keepSnapshots("r", "b1", uppers("r1", 1));
  await store.save("q", base(start(q)));
  await store.save("r", base(start(r)));
  await store.remove("q", "the image's history does not line up with its layers");
  await waitFor(() => !existsSync(q[0]!), 5000, "q's snapshots to be removed");
  assert.ok(existsSync(r[0]!), "r's snapshot stays");
  assert.equal(await store.load("q"), undefined);
  assert.match((await store.refusal("q")) ?? "", /history/);
});
