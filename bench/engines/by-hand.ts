// podman (or buildah) by hand on one warm storage: `git archive` of the commit, `podman build`
// (or `buildah bud` with GOGC=off, as kiln runs it: the floor for kiln's own engine), then
// `podman push --digestfile`.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { exportCommit, podmanEnv, removeTree, run, runroot, startTimeline, type BenchEnv, type Engine } from "./engine.js";

/** dirName: the engine's directory under the bench's work (its storage); the tool's name by default. */
export function byHandEngine(env: BenchEnv, tool: "podman" | "buildah", dirName: string = tool): Engine {
  const dir = join(env.work, dirName);
  let penv = podmanEnv(dir, env.registry);
  const head = tool === "podman" ? ["build", "--pull=missing"] : ["bud", "--pull=false"];
  const engine: Engine = {
    name: tool,
    async build(app, commit) {
      const t = startTimeline();
      engine.timeline = t.lines;
      t.mark("bench: git archive");
      const ctx = join(dir, "ctx", app.name);
      await exportCommit(app, commit, ctx);
      const tag = `${env.registry}/bench/${tool}-${app.name}:${commit}`;
      t.mark(`bench: ${tool} ${head[0]}`);
      await run(tool, [...head, "--layers", "--network=host", "-t", tag, "--", ctx], tool === "buildah" ? { ...penv, GOGC: "off", GOMEMLIMIT: "2GiB" } : penv, undefined, t.mark);
      t.mark("bench: podman push");
      await run("podman", ["push", "--digestfile", join(dir, "digest"), "--", tag], penv, undefined, t.mark);
      t.mark("bench: end");
      return readFileSync(join(dir, "digest"), "utf8").trim();
    },
    async reset() {
      removeTree(dir);
      removeTree(runroot(dir));
      penv = podmanEnv(dir, env.registry);
    },
    async close() {},
  };
  return engine;
}
