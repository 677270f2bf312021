// kiln as a control plane uses it: kilnd through its API (Build, then the final StreamLogs
// message). "kiln" runs with the fast path, "kiln-full" with --fast-path off (always podman).
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { kilndClient, type KilndClient } from "../../src/client/kilnd.js";
import { BuildState, type Build } from "../../src/gen/kiln/v1/builder_pb.js";
import { removeTree, type BenchApp, type BenchEnv, type Engine, type TimedLine } from "./engine.js";

export interface KilnEngine extends Engine {
  client: KilndClient;
  port: number;
  /** kilnd's process id while it runs. */
  pid(): number | undefined;
  /** Stops kilnd and starts it again: milliseconds from spawn to the first answered RPC. */
  startupMs(): Promise<number>;
  /** Starts a build and resolves with its id (the caller follows it). */
  start(app: BenchApp, commit: string): Promise<string>;
  /** Follows a build to its end. */
  finish(id: string): Promise<Build>;
  /** The last build's record. */
  last: Build | undefined;
}

/** o.dirName: kilnd's data directory under the bench's work; the engine's name by default. */
export async function kilnEngine(env: BenchEnv, o: { name: string; port: number; fastPath: boolean; dirName?: string }): Promise<KilnEngine> {
  const data = join(env.work, o.dirName ?? o.name);
  let proc: ChildProcess | undefined;
  const client = kilndClient(`http://127.0.0.1:${o.port}`);
  const startKilnd = async () => {
    const t0 = performance.now();
    const args = [join(env.root, "dist/bin/kilnd.js"), "--listen", `127.0.0.1:${o.port}`, "--data", data, "--idle-timeout", "0", "--insecure-registry", env.registry];
    if (!o.fastPath) args.push("--fast-path", "off");
    const p = spawn(process.execPath, args, { stdio: "ignore" });
    proc = p;
    for (;;) {
      if (p.exitCode !== null) throw new Error(`kilnd (${o.name}) exited with ${p.exitCode}`);
      if (await client.getInfo({}).then(() => true, () => false)) return performance.now() - t0;
      await new Promise((r) => setTimeout(r, 2));
    }
  };
  const stop = async () => {
    if (!proc) return;
    const p = proc;
    proc = undefined;
    if (p.exitCode !== null || p.signalCode !== null) return;
    p.kill("SIGTERM");
    await new Promise((r) => p.once("exit", r));
  };
  await startKilnd();
  const engine: KilnEngine = {
    name: o.name,
    client,
    port: o.port,
    last: undefined,
    pid: () => proc?.pid,
    async start(app, commit) {
      const { build } = await client.build({ project: app.name, source: { kind: { case: "git", value: { url: app.repo, commit } } }, image: `${env.registry}/bench/${o.name}-${app.name}` });
      return build!.id;
    },
    async finish(id) {
      for await (const m of client.streamLogs({ buildId: id, follow: true, afterSeq: BigInt(Number.MAX_SAFE_INTEGER) })) {
        if (m.event.case === "build") {
          engine.last = m.event.value;
          if (m.event.value.state !== BuildState.SUCCEEDED) throw new Error(`${o.name} build ${id}: ${m.event.value.error}`);
          return m.event.value;
        }
      }
      throw new Error("the log stream ended without the build");
    },
    async settle() {
      // kilnd's gauge of builds past their result whose work after it still runs.
      for (;;) {
        const text = await (await fetch(`http://127.0.0.1:${o.port}/metrics`)).text();
        const m = /^kiln_builds_settling (\d+)$/m.exec(text);
        if (!m) throw new Error(`${o.name}: /metrics has no kiln_builds_settling`);
        if (m[1] === "0") return;
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    async build(app, commit) {
      const t0 = Date.now();
      const b = await engine.finish(await engine.start(app, commit));
      const end = Date.now() - t0;
      // The build's own log, each line at the time kilnd stamped it (same clock as t0).
      const lines: TimedLine[] = [];
      for await (const m of client.streamLogs({ buildId: b.id, follow: false, afterSeq: 0n })) {
        if (m.event.case !== "line") continue;
        const at = m.event.value.time!;
        lines.push({ ms: Number(at.seconds) * 1000 + at.nanos / 1e6 - t0, text: m.event.value.text });
      }
      lines.push({ ms: end, text: "bench: end" });
      engine.timeline = lines;
      return b.imageDigest;
    },
    async reset() {
      await stop();
      removeTree(data);
      await startKilnd();
    },
    async startupMs() {
      await stop();
      return startKilnd();
    },
    close: stop,
  };
  return engine;
}
