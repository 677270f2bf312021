// A real kilnd for tests: the daemon from src/ (through tsx) as a child process on a free port,
// with a Connect client, its log, and ways to stop it gently or kill it.
import { spawn, type ChildProcess } from "node:child_process";
import { kilndClient, type KilndClient } from "../../src/client/kilnd.js";
import { BuildState, type Build } from "../../src/gen/kiln/v1/builder_pb.js";
import { freePort, waitFor } from "./wait.js";

const ROOT = new URL("../..", import.meta.url).pathname;

export interface TestKilnd {
  port: number;
  addr: string;
  proc: ChildProcess;
  client: KilndClient;
  /** Everything kilnd printed so far. */
  output(): string;
  exited: Promise<number | null>;
  /** SIGTERM and wait for the exit code. */
  stop(): Promise<number | null>;
  kill9(): Promise<void>;
  /** The build's final record: the last message of a StreamLogs that follows it (no polling). */
  waitDone(id: string, timeoutMs?: number): Promise<Build>;
  /** Resolves once kilnd's own output (its JSON log) matches. */
  waitOutput(re: RegExp, timeoutMs?: number): Promise<void>;
  /**
   * What the fast path recorded after a full build (the next build's base): kilnd's log line,
   * written after the build's result. Waits for it.
   */
  fastPathRecord(buildId: string, timeoutMs?: number): Promise<string>;
  /** Builds one commit of a repository and waits for the build's end. */
  buildCommit(o: { project: string; url: string; commit: string; image: string; context?: string; buildArgs?: Record<string, string>; secrets?: Record<string, string> }): Promise<Build>;
}

export interface KilndOptions {
  data: string;
  registry?: string;
  args?: string[];
  token?: string;
  env?: Record<string, string>;
  /** Run dist/bin/kilnd.js, the bundle kilnd ships as (scripts/test.sh builds it first), instead of src/ under tsx. */
  bundle?: boolean;
}

export const clientFor = (addr: string, token?: string): KilndClient => kilndClient(addr, token);

export async function startKilnd(o: KilndOptions): Promise<TestKilnd> {
  const port = await freePort();
  const entry = o.bundle ? [`${ROOT}dist/bin/kilnd.js`] : ["--import", "tsx", `${ROOT}src/bin/kilnd.ts`];
  const args = [...entry, "--listen", `127.0.0.1:${port}`, "--data", o.data, "--idle-timeout", "0"];
  if (o.registry) args.push("--insecure-registry", o.registry);
  args.push(...(o.args ?? []));
  const env = { ...process.env, ...o.env };
  delete env.CONTAINERS_CONF;
  delete env.CONTAINERS_STORAGE_CONF;
  delete env.CONTAINERS_REGISTRIES_CONF;
  const proc = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout!.on("data", (d) => (out += d));
  proc.stderr!.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((res) => proc.once("exit", (code) => res(code)));
  let gone = false;
  void exited.then(() => (gone = true));
  const addr = `http://127.0.0.1:${port}`;
  const client = clientFor(addr, o.token);
  await waitFor(
    async () => {
      if (gone) throw new Error(`kilnd exited at start:\n${out}`);
      return out.includes('"kilnd serving"');
    },
    20_000,
    "kilnd to serve",
  );
  const k: TestKilnd = {
    port,
    addr,
    proc,
    client,
    output: () => out,
    exited,
    async stop() {
      if (!gone) proc.kill("SIGTERM");
      return exited;
    },
    async kill9() {
      if (!gone) proc.kill("SIGKILL");
      await exited;
    },
    async waitDone(id, timeoutMs = 120_000) {
      const signal = AbortSignal.timeout(timeoutMs);
      // Past every line: the stream waits for the log to close, then sends the final record.
      for await (const m of client.streamLogs({ buildId: id, follow: true, afterSeq: BigInt(Number.MAX_SAFE_INTEGER) }, { signal })) {
        if (m.event.case === "build" && m.event.value.state !== BuildState.QUEUED && m.event.value.state !== BuildState.RUNNING) return m.event.value;
      }
      throw new Error(`build ${id}: its log stream ended without a final record`);
    },
    async fastPathRecord(buildId, timeoutMs = 120_000) {
      const find = () =>
        out.split("\n").flatMap((line) => {
          try {
            const j = JSON.parse(line) as { build?: string; msg?: unknown };
            return j.build === buildId && typeof j.msg === "string" && j.msg.startsWith("fast path: ") ? [j.msg] : [];
          } catch {
            return [];
          }
        })[0];
      await this.waitOutput(new RegExp(`"build":"${buildId}"[^\n]*"msg":"fast path: `), timeoutMs);
      return find()!;
    },
    waitOutput(re, timeoutMs = 120_000) {
      if (re.test(out)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => {
          cleanup();
          reject(new Error(`kilnd did not print ${re} within ${timeoutMs} ms:\n${out.slice(-2000)}`));
        }, timeoutMs);
        const check = () => {
          if (!re.test(out)) return;
          cleanup();
          resolve();
        };
        const cleanup = () => {
          clearTimeout(t);
          proc.stdout!.off("data", check);
          proc.stderr!.off("data", check);
        };
        // After the listeners above that append to out.
        proc.stdout!.on("data", check);
        proc.stderr!.on("data", check);
      });
    },
    async buildCommit(o) {
      const { build: b } = await client.build({
        project: o.project,
        source: { kind: { case: "git", value: { url: o.url, commit: o.commit } } },
        image: o.image,
        ...(o.context ? { context: o.context } : {}),
        ...(o.buildArgs ? { buildArgs: o.buildArgs } : {}),
        ...(o.secrets ? { secrets: o.secrets } : {}),
      });
      return k.waitDone(b!.id);
    },
  };
  return k;
}
