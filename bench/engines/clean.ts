// A clean runner, as CI services with a distributed cache work: a fresh, empty storage for every
// build, the layer cache imported from and exported to the registry (--cache-from/--cache-to).
// "clean" starts without the base image and pulls it, like a real runner; "clean-preloaded"
// starts with the base image already there, in a read-only image store pulled once outside the
// timing (podman's additionalimagestores). Either way the runner's npm cache (its cache mounts)
// starts empty.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { exportCommit, podmanEnv, removeTree, run, runroot, type BenchEnv, type Engine } from "./engine.js";

export function cleanRunnerEngine(env: BenchEnv, o: { preloaded: boolean; baseImage: string }): Engine & { prepare(): Promise<void> } {
  const name = o.preloaded ? "clean-preloaded" : "clean";
  const dir = join(env.work, name);
  const seed = join(env.work, "clean-seed");
  let penv = podmanEnv(dir, env.registry);
  return {
    name,
    /** A fresh runner (outside the timing): empty storage, or one holding only the base image. */
    async prepare() {
      removeTree(dir);
      removeTree(runroot(dir));
      if (!o.preloaded) {
        penv = podmanEnv(dir, env.registry);
        return;
      }
      // The base image, pulled once into a storage of its own, is the runner's read-only image store.
      const senv = podmanEnv(seed, env.registry);
      await run("podman", ["image", "exists", o.baseImage], senv).catch(() => run("podman", ["pull", "-q", o.baseImage], senv));
      penv = podmanEnv(dir, env.registry, { imageStore: join(seed, "storage") });
    },
    async build(app, commit) {
      const ctx = join(dir, "ctx");
      await exportCommit(app, commit, ctx);
      const tag = `${env.registry}/bench/${name}-${app.name}:${commit}`;
      const cache = `${env.registry}/bench/${name}-${app.name}-cache`;
      await run("podman", ["build", "--pull=missing", "--layers", "--network=host", "--cache-from", cache, "--cache-to", cache, "-t", tag, "--", ctx], penv);
      await run("podman", ["push", "--digestfile", join(dir, "digest"), "--", tag], penv);
      return readFileSync(join(dir, "digest"), "utf8").trim();
    },
    async reset() {},
    async close() {}, // the storage stays in the bench's work directory until the next run empties it
  };
}
