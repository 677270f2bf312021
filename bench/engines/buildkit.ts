// BuildKit, the fastest widely used local builder: Debian's docker.io (dockerd 20.10 with its
// embedded BuildKit), `docker build` with DOCKER_BUILDKIT=1 and `docker push`, on a warm daemon
// of the benchmark's own (data under bench/work, its own socket). When dockerd cannot start,
// the engine is skipped with the reason, and the report says so.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { exportCommit, removeTree, run, startTimeline, type BenchEnv, type Engine } from "./engine.js";

const DOCKER = "/usr/bin/docker";
const DOCKERD = "/usr/sbin/dockerd";

/** dirName: the daemon's directory under the bench's work, also the name of its socket and exec root. */
export async function buildkitEngine(env: BenchEnv, dirName = "buildkit"): Promise<Engine | { skipped: string }> {
  if (!existsSync(DOCKERD) || !existsSync(DOCKER)) return { skipped: "Debian's docker.io is not installed (dockerd 20.10 with BuildKit)" };
  const dir = join(env.work, dirName);
  const sock = `/run/kiln-bench-${dirName}.sock`;
  const denv = { ...process.env, DOCKER_HOST: `unix://${sock}`, DOCKER_BUILDKIT: "1", DOCKER_CONFIG: join(dir, "client") };
  let daemon: ChildProcess | undefined;

  const start = async () => {
    mkdirSync(join(dir, "client"), { recursive: true });
    const log = openSync(join(dir, "dockerd.log"), "a");
    const args = [`--data-root=${join(dir, "data")}`, `--exec-root=/run/kiln-bench-${dirName}`, `--pidfile=${join(dir, "dockerd.pid")}`, `--host=unix://${sock}`];
    args.push(`--insecure-registry=${env.registry}`, "--iptables=false", "--ip-masq=false", "--bridge=none", "--storage-driver=overlay2");
    const d = spawn(DOCKERD, args, { stdio: ["ignore", log, log] });
    daemon = d;
    for (let i = 0; i < 300; i++) {
      if (d.exitCode !== null) break;
      if (await run(DOCKER, ["info", "--format", "{{.ServerVersion}}"], denv).then(() => true, () => false)) return undefined;
      await new Promise((r) => setTimeout(r, 100));
    }
    await stop();
    return `dockerd did not start (see ${join(dir, "dockerd.log")})`;
  };
  const stop = async () => {
    const d = daemon;
    daemon = undefined;
    if (!d || d.exitCode !== null || d.signalCode !== null) return;
    d.kill("SIGTERM");
    await new Promise((r) => d.once("exit", r));
  };

  removeTree(dir);
  const failed = await start();
  if (failed) return { skipped: failed };
  const engine: Engine = {
    name: "buildkit",
    async build(app, commit) {
      const t = startTimeline();
      engine.timeline = t.lines;
      t.mark("bench: git archive");
      const ctx = join(dir, "ctx", app.name);
      await exportCommit(app, commit, ctx);
      const tag = `${env.registry}/bench/buildkit-${app.name}:${commit}`;
      t.mark("bench: docker build");
      await run(DOCKER, ["build", "--progress=plain", "--network=host", "-f", join(ctx, "Containerfile"), "-t", tag, ctx], denv, undefined, t.mark);
      t.mark("bench: docker push");
      const out = await run(DOCKER, ["push", tag], denv, undefined, t.mark);
      t.mark("bench: end");
      const digest = /digest: (sha256:[0-9a-f]{64})/.exec(out)?.[1];
      if (!digest) throw new Error(`docker push printed no digest: ${out.slice(-300)}`);
      return digest;
    },
    async reset() {
      await run(DOCKER, ["system", "prune", "--all", "--force"], denv);
      await run(DOCKER, ["builder", "prune", "--all", "--force"], denv);
    },
    close: stop, // its data stays in the bench's work directory until the next run empties it
  };
  return engine;
}
