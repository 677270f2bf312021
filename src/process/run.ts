// Runs git and podman: no shell, its own process group (so a cancel reaches every child), and
// every output line handed to the caller as it comes.
import type { Readable } from "node:stream";
import { loadExeca } from "./execa.js";
import { LineSplitter } from "./lines.js";

export type OutputStream = "stdout" | "stderr";

export interface RunOptions {
  cwd?: string;
  env: Record<string, string>;
  onLine?: (text: string, stream: OutputStream) => void;
  /** Applied to every line before anyone sees it (masks credentials); cut: the line was cut. */
  redact?: (text: string, cut: boolean) => string;
}

export interface RunResult {
  exitCode: number;
  /** Set when a signal ended the process. */
  signal?: string;
  /** The last lines of stderr, for error messages. */
  stderrTail: string[];
  stdout: string;
}

export interface RunningProcess {
  readonly result: Promise<RunResult>;
  /** Stops the whole process group: SIGTERM, then SIGKILL after graceMs. */
  stop(graceMs: number): Promise<void>;
}

const TAIL = 20;
const MAX_LINE_BYTES = 16 * 1024;
const MAX_STDOUT_KEPT = 1024 * 1024;

export async function run(file: string, args: readonly string[], opts: RunOptions): Promise<RunningProcess> {
  const execa = await loadExeca();
  const child = execa(file, args, {
    cwd: opts.cwd,
    env: opts.env,
    extendEnv: false,
    detached: true,
    stdin: "ignore",
    buffer: false,
    reject: false,
    cleanup: true,
  });
  const stderrTail: string[] = [];
  let stdout = "";
  const reading: Promise<void>[] = [];
  const follow = (stream: Readable | null, name: OutputStream) => {
    if (!stream) return;
    const lines = new LineSplitter(MAX_LINE_BYTES, (raw, dropped) => {
      let line = opts.redact ? opts.redact(raw, dropped > 0) : raw;
      if (dropped > 0) line = `${line}… (line cut at ${MAX_LINE_BYTES} bytes; ${dropped} more bytes not kept)`;
      if (name === "stderr") {
        stderrTail.push(line);
        if (stderrTail.length > TAIL) stderrTail.shift();
      } else if (stdout.length < MAX_STDOUT_KEPT) {
        stdout += `${line}\n`;
      }
      opts.onLine?.(line, name);
    });
    reading.push(
      new Promise((res) => {
        stream.on("data", (chunk: Buffer) => lines.push(chunk));
        stream.once("close", () => {
          lines.end();
          res();
        });
      }),
    );
  };
  follow(child.stdout, "stdout");
  follow(child.stderr, "stderr");

  const result: Promise<RunResult> = child.then(async (r) => {
    await Promise.all(reading);
    const out: RunResult = { exitCode: r.exitCode ?? -1, stderrTail, stdout };
    if (r.signal) out.signal = r.signal;
    if (r.failed && r.exitCode === undefined && !r.signal) {
      // It never started (no such file, …).
      stderrTail.push(String(r.originalMessage ?? r.shortMessage ?? "failed to start"));
    }
    return out;
  });

  const signalGroup = (sig: NodeJS.Signals) => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      // ESRCH: the group is gone already.
    }
  };

  return {
    result,
    async stop(graceMs) {
      signalGroup("SIGTERM");
      const timer = new Promise<"timeout">((res) => setTimeout(res, graceMs, "timeout").unref());
      const outcome = await Promise.race([result.then(() => "exited" as const), timer]);
      // Children may outlive the leader in the group: always finish the group off.
      signalGroup("SIGKILL");
      if (outcome === "timeout") await result;
    },
  };
}
