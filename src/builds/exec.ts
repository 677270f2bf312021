// A process a build runs (git, podman, buildah): its output logged line by line in the build's
// phase, masked, and the process registered on the build so that a cancel stops it.
import { LogStream } from "../gen/kiln/v1/builder_pb.js";
import { loadExeca } from "../process/execa.js";
import { run, type RunResult } from "../process/run.js";
import { StopSignal, type ActiveBuild, type ProcessKind } from "./active-build.js";

export interface BuildExecOptions {
  onLine?: (line: string) => void;
  /** Not logged (probes whose failure is an answer, not an error). */
  quiet?: boolean;
  /** Lines not logged: a known notice that says nothing about the build. */
  hide?: RegExp;
  /**
   * Stops the process (its whole group) after ms; timedOut says so. When ms pass, extend() may
   * grant more time, once (the push learns its image's size only if it runs that long).
   */
  deadline?: { ms: number; extend?: () => Promise<number> };
}

export async function buildExec(a: ActiveBuild, kind: ProcessKind, file: string, args: string[], env: Record<string, string>, o: BuildExecOptions = {}): Promise<RunResult & { timedOut: boolean }> {
  // Loaded once: from then on run() starts the process before any other event can come in.
  await loadExeca();
  if (a.abort.signal.aborted) throw new StopSignal();
  const proc = await run(file, args, {
    env,
    redact: (line, cut) => (cut ? a.masker.maskCut(line) : a.masker.mask(line)),
    onLine: (text, stream) => {
      if (!o.quiet && !o.hide?.test(text)) a.log.append(text, stream === "stdout" ? LogStream.STDOUT : LogStream.STDERR, a.phase);
      o.onLine?.(text);
    },
  });
  const mine = { kind, run: proc };
  a.procs.add(mine);
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  let ended = false;
  const d = o.deadline;
  if (d) {
    const expire = () => {
      timedOut = true;
      void proc.stop(STOP_GRACE_MS);
    };
    timer = setTimeout(() => {
      if (!d.extend) return expire();
      void d.extend().then(
        (more) => void (ended || (timer = setTimeout(expire, more))),
        () => expire(),
      );
    }, d.ms);
  }
  try {
    const r = await proc.result;
    if (a.abort.signal.aborted) throw new StopSignal();
    return { ...r, timedOut };
  } finally {
    ended = true;
    clearTimeout(timer);
    a.procs.delete(mine);
  }
}

const STOP_GRACE_MS = 500;
