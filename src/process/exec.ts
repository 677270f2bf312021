// Short commands kiln runs for an answer (podman images, runc list, git diff, a credential
// helper): no shell, no inherited environment, a deadline, stopped with a signal, the whole output
// collected. A build's long-running processes go through run.ts instead (streamed line by line).
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { loadExeca } from "./execa.js";

export interface ExecOptions {
  env: Record<string, string>;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Written to stdin. */
  input?: string;
  /** Piped to stdin (a layer's tar into tar -x); its error fails the command. */
  stdin?: Readable;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Ended by the deadline. */
  timedOut: boolean;
  /** The signal that ended it (a deadline's, a cancel's, or one sent from outside kilnd). */
  signal?: string;
}

export async function exec(file: string, args: readonly string[], o: ExecOptions): Promise<ExecResult> {
  const execa = await loadExeca();
  const child = execa(file, args, {
    env: o.env,
    extendEnv: false,
    reject: false,
    timeout: o.timeoutMs,
    ...(o.signal ? { cancelSignal: o.signal } : {}),
    ...(o.input !== undefined ? { input: o.input } : { stdin: o.stdin ? ("pipe" as const) : ("ignore" as const) }),
  });
  // A source that fails (a download cut off) ends the command too: its error is the answer.
  const feeding = o.stdin && child.stdin ? pipeline(o.stdin, child.stdin).catch((e: unknown) => (child.kill("SIGKILL"), e as Error)) : undefined;
  const r = await child;
  const fed = await feeding;
  const ended = { exitCode: r.exitCode ?? -1, stdout: String(r.stdout ?? ""), timedOut: r.timedOut === true, ...(r.signal ? { signal: r.signal } : {}) };
  const stderr = String(r.stderr ?? "");
  if (fed instanceof Error) return { ...ended, stderr: `${stderr}\n${fed.message}`.trim() };
  // A command that never started (no such file) has its reason in execa's message.
  const why = r.failed && r.exitCode === undefined && !r.timedOut && !r.isCanceled ? String(r.originalMessage ?? r.shortMessage ?? "") : "";
  return { ...ended, stderr: stderr || why };
}

/**
 * What went wrong, in one line, for exec's results and run's alike: the last line of stderr that
 * says "error" (podman and buildah print warnings after it), else the last that says anything,
 * else the exit code; a process a signal ended says so first.
 */
export function errorSummary(r: { exitCode: number; stderr?: string; stderrTail?: readonly string[]; timedOut?: boolean; signal?: string }): string {
  if (r.timedOut) return "timed out";
  const lines = (r.stderrTail ?? r.stderr?.split("\n") ?? []).map((l) => l.trim()).filter(Boolean);
  const said = lines.filter((l) => /^Error:|error/i.test(l)).at(-1) ?? lines.at(-1);
  if (r.signal) return `killed by ${r.signal}${said ? `: ${said}` : ""}`;
  return said ?? `exit code ${r.exitCode}`;
}
