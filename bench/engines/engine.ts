// What every engine of the benchmark is, and the helpers they share. An engine does the whole
// job a control plane wants: from a git commit to a pushed image whose registry digest is known.
import { spawn } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

// Storage that podman or dockerd leave mounted is unmounted before removal, as in the tests.
export { removeTree } from "../lib/remove-tree.js";

export interface BenchApp {
  /** Also the project name and the last part of the image repository. */
  name: string;
  /** The app's git repository (file://). */
  repo: string;
}

/** One line of a build's output, at the time it arrived (ms since the engine was asked to build). */
export interface TimedLine {
  ms: number;
  text: string;
}

export interface Engine {
  name: string;
  /** The last build's output lines, timed (the profile reads its steps from them). */
  timeline?: TimedLine[];
  /** Builds the app's commit and pushes it; resolves with the registry digest. */
  build(app: BenchApp, commit: string): Promise<string>;
  /**
   * Resolves once the work the engine does after a build's result (kilnd's base record and
   * prune) has ended, so that it does not run beside the next engine's timed build. Untimed.
   */
  settle?(): Promise<void>;
  /** Throws away the engine's cache and images, the base image included (the cold scenario). */
  reset(): Promise<void>;
  /** Stops what the engine runs. Its data stays under bench/work, which the next run empties first. */
  close(): Promise<void>;
}

export interface BenchEnv {
  root: string;
  work: string;
  registry: string;
}

export const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** The engine's podman runroot (on tmpfs, as kilnd's): its state while podman runs. */
export const runroot = (dir: string) => `/dev/shm/kiln-bench-${Buffer.from(dir).toString("hex").slice(-12)}`;

/**
 * A podman configuration of the engine's own, like kilnd's: storage under dir, runroot on tmpfs,
 * and TMPDIR under dir too, because buildah keeps RUN --mount=type=cache directories in
 * $TMPDIR/buildah-cache: each engine has cache mounts of its own, and emptying dir empties them.
 */
export function podmanEnv(dir: string, registry: string, o: { imageStore?: string } = {}): NodeJS.ProcessEnv {
  mkdirSync(join(dir, "tmp"), { recursive: true });
  writeFileSync(join(dir, "containers.conf"), '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\nevents_logger = "none"\n');
  // imageStore: a read-only image store beside the engine's own (how a runner gets preloaded images).
  const extra = o.imageStore ? `[storage.options]\nadditionalimagestores = ["${o.imageStore}"]\n` : "";
  writeFileSync(join(dir, "storage.conf"), `[storage]\ndriver = "overlay"\ngraphroot = "${dir}/storage"\nrunroot = "${runroot(dir)}"\n${extra}`);
  writeFileSync(join(dir, "registries.conf"), `unqualified-search-registries = []\n[[registry]]\nlocation = "${registry}"\ninsecure = true\n`);
  return { ...process.env, CONTAINERS_CONF: join(dir, "containers.conf"), CONTAINERS_STORAGE_CONF: join(dir, "storage.conf"), CONTAINERS_REGISTRIES_CONF: join(dir, "registries.conf"), TMPDIR: join(dir, "tmp") };
}

/**
 * Runs a command to completion; rejects with the tail of its stderr. Resolves with stdout+stderr.
 * onLine: each output line as it arrives (both streams).
 */
export function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv, cwd?: string, onLine?: (line: string) => void): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const p = spawn(cmd, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const partial = { stdout: "", stderr: "" };
    const take = (stream: "stdout" | "stderr") => (d: Buffer) => {
      out += d;
      if (!onLine) return;
      const lines = (partial[stream] + d).split("\n");
      partial[stream] = lines.pop()!;
      for (const l of lines) onLine(l);
    };
    p.stdout.on("data", take("stdout"));
    p.stderr.on("data", take("stderr"));
    p.on("error", reject);
    p.on("exit", (code) => {
      for (const rest of [partial.stdout, partial.stderr]) if (rest && onLine) onLine(rest);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.slice(0, 3).join(" ")} failed (${code}): ${out.slice(-800)}`));
    });
  });
}

/** A timeline that starts now: mark(text) records a line at the time it is called. */
export function startTimeline(): { lines: TimedLine[]; mark(text: string): void } {
  const t0 = performance.now();
  const lines: TimedLine[] = [];
  return { lines, mark: (text) => lines.push({ ms: performance.now() - t0, text }) };
}

/** The commit's files in a fresh directory, as a CI runner checks them out: `git archive`. */
export async function exportCommit(app: BenchApp, commit: string, dir: string): Promise<void> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  await run("sh", ["-c", 'git --git-dir "$1/.git" archive "$2" | tar -x -C "$3"', "sh", app.repo.replace(/^file:\/\//, ""), commit, dir]);
}
