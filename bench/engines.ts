// The builders the benchmark compares, each doing the whole job a control plane wants: from a
// git commit to a pushed image whose registry digest is known.
//   kiln     kilnd through its API (Build, then the final StreamLogs message)
//   podman   by hand: git archive of the commit, podman build, podman push, on one warm storage
//   buildah  the same with buildah bud, as kiln runs it: the floor for kiln's own engine
//   clean    a fresh, empty storage for every build with the layer cache in the registry
//            (--cache-from/--cache-to), as CI runners with a distributed cache work
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { BuilderService, BuildState } from "../src/gen/kiln/v1/builder_pb.js";

export interface Engine {
  name: string;
  /** Builds the commit and pushes it; resolves with the registry digest. */
  build(commit: string): Promise<string>;
  /** Throws away the engine's cache (the cold scenario). */
  reset(): Promise<void>;
  close(): Promise<void>;
}

export interface BenchEnv {
  root: string;
  work: string;
  repo: string;
  registry: string;
}

const ROOT = new URL("..", import.meta.url).pathname;

function unmountBelow(dir: string): void {
  const mounts = readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" ")[1] ?? "").filter((m) => m.startsWith(`${dir}/`) || m === dir).sort().reverse();
  for (const m of mounts) {
    try {
      execFileSync("umount", ["-l", m]);
    } catch {
      // gone
    }
  }
}

/** A podman configuration of our own, like kilnd's: storage under dir, runroot on tmpfs. */
function podmanEnv(dir: string, registry: string): NodeJS.ProcessEnv {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "containers.conf"), '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\nevents_logger = "none"\n');
  writeFileSync(join(dir, "storage.conf"), `[storage]\ndriver = "overlay"\ngraphroot = "${dir}/storage"\nrunroot = "/dev/shm/kiln-bench-${Buffer.from(dir).toString("hex").slice(-12)}"\n`);
  writeFileSync(join(dir, "registries.conf"), `unqualified-search-registries = []\n[[registry]]\nlocation = "${registry}"\ninsecure = true\n`);
  return { ...process.env, CONTAINERS_CONF: join(dir, "containers.conf"), CONTAINERS_STORAGE_CONF: join(dir, "storage.conf"), CONTAINERS_REGISTRIES_CONF: join(dir, "registries.conf") };
}

const run = (cmd: string, args: string[], env?: NodeJS.ProcessEnv, cwd?: string) =>
  new Promise<string>((resolve, reject) => {
    const p = spawn(cmd, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.slice(0, 3).join(" ")} failed (${code}): ${err.slice(-500)}`))));
  });

export async function kilnEngine(env: BenchEnv, port: number): Promise<Engine & { startupMs(): Promise<number> }> {
  const data = join(env.work, "kiln-data");
  let proc: ChildProcess | undefined;
  const start = async () => {
    const t0 = performance.now();
    proc = spawn(process.execPath, [join(ROOT, "dist/bin/kilnd.js"), "--listen", `127.0.0.1:${port}`, "--data", data, "--idle-timeout", "0", "--insecure-registry", env.registry], { stdio: "ignore" });
    for (;;) {
      const ok = await client.getInfo({}).then(() => true, () => false);
      if (ok) return performance.now() - t0;
      await new Promise((r) => setTimeout(r, 2));
    }
  };
  const stop = async () => {
    if (!proc) return;
    const p = proc;
    proc = undefined;
    p.kill("SIGTERM");
    await new Promise((r) => p.once("exit", r));
  };
  const client = createClient(BuilderService, createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1" }));
  await start();
  return {
    name: "kiln",
    async build(commit) {
      const { build } = await client.build({ project: "bench", source: { kind: { case: "git", value: { url: `file://${env.repo}`, commit } } }, image: `${env.registry}/bench/kiln` });
      for await (const m of client.streamLogs({ buildId: build!.id, follow: true, afterSeq: BigInt(Number.MAX_SAFE_INTEGER) })) {
        if (m.event.case === "build") {
          if (m.event.value.state !== BuildState.SUCCEEDED) throw new Error(`kiln build ${build!.id}: ${m.event.value.error}`);
          return m.event.value.imageDigest;
        }
      }
      throw new Error("the log stream ended without the build");
    },
    async reset() {
      await stop();
      unmountBelow(data);
      rmSync(data, { recursive: true, force: true });
      await start();
    },
    async startupMs() {
      await stop();
      return start();
    },
    close: stop,
  };
}

/** By hand on one warm storage: `podman build`, or `buildah bud` as kiln runs it (GOGC=off). */
export function byHandEngine(env: BenchEnv, tool: "podman" | "buildah"): Engine {
  const dir = join(env.work, tool);
  let penv = podmanEnv(dir, env.registry);
  const buildArgs = tool === "podman" ? ["build", "--pull=missing"] : ["bud", "--pull=false"];
  return {
    name: tool,
    async build(commit) {
      const ctx = join(dir, "ctx");
      rmSync(ctx, { recursive: true, force: true });
      mkdirSync(ctx, { recursive: true });
      await run("sh", ["-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", env.repo, commit, ctx]);
      const tag = `${env.registry}/bench/${tool}:${commit}`;
      await run(tool, [...buildArgs, "--layers", "--network=host", "-t", tag, "--", ctx], tool === "buildah" ? { ...penv, GOGC: "off", GOMEMLIMIT: "2GiB" } : penv);
      await run("podman", ["push", "--digestfile", join(dir, "digest"), "--", tag], penv);
      return readFileSync(join(dir, "digest"), "utf8").trim();
    },
    async reset() {
      unmountBelow(dir);
      rmSync(dir, { recursive: true, force: true });
      penv = podmanEnv(dir, env.registry);
    },
    async close() {},
  };
}

export function cleanRunnerEngine(env: BenchEnv): Engine {
  const dir = join(env.work, "clean");
  return {
    name: "clean",
    async build(commit) {
      // A new runner: empty storage, the base image must come from the registry.
      unmountBelow(dir);
      rmSync(dir, { recursive: true, force: true });
      const penv = podmanEnv(dir, env.registry);
      const ctx = join(dir, "ctx");
      mkdirSync(ctx, { recursive: true });
      await run("sh", ["-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", env.repo, commit, ctx]);
      const tag = `${env.registry}/bench/clean:${commit}`;
      const cache = `${env.registry}/bench/clean-cache`;
      await run("podman", ["build", "--layers", "--network=host", "--cache-from", cache, "--cache-to", cache, "-t", tag, "--", ctx], penv);
      await run("podman", ["push", "--digestfile", join(dir, "digest"), "--", tag], penv);
      return readFileSync(join(dir, "digest"), "utf8").trim();
    },
    async reset() {},
    async close() {
      unmountBelow(dir);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
