// Build logs on the volume: live logs in memory for followers, finished ones replayed from disk.
import { access, rm } from "node:fs/promises";
import { join } from "node:path";
import { BuildLog, DEFAULT_LOG_LIMITS, readLogFile, type LogEntry, type LogLimits } from "./build-log.js";

export class LogStore {
  private readonly live = new Map<string, BuildLog>();
  private readers = 0;

  constructor(
    private readonly dir: string,
    private readonly limits: LogLimits = DEFAULT_LOG_LIMITS,
  ) {}

  pathOf(buildId: string): string {
    return join(this.dir, `${buildId}.log`);
  }

  open(buildId: string, mask?: (text: string) => string): BuildLog {
    const log = new BuildLog(this.pathOf(buildId), mask, this.limits);
    this.live.set(buildId, log);
    return log;
  }

  async finish(buildId: string): Promise<void> {
    const log = this.live.get(buildId);
    if (!log) return;
    await log.close();
    this.live.delete(buildId);
  }

  /** Removes a finished build's log (its record was trimmed). */
  async remove(buildId: string): Promise<void> {
    if (this.live.has(buildId)) return;
    await rm(this.pathOf(buildId), { force: true });
  }

  get activeReaders(): number {
    return this.readers;
  }

  /** Replays a build's log after afterSeq and, with follow, tails it until it closes. */
  async *read(buildId: string, afterSeq: number, follow: boolean, signal?: AbortSignal): AsyncGenerator<LogEntry> {
    this.readers++;
    try {
      const log = this.live.get(buildId);
      if (log) {
        yield* log.read(afterSeq, follow, signal);
        return;
      }
      yield* this.readFile(buildId, afterSeq, signal);
    } finally {
      this.readers--;
    }
  }

  private async *readFile(buildId: string, afterSeq: number, signal?: AbortSignal): AsyncGenerator<LogEntry> {
    const path = this.pathOf(buildId);
    try {
      await access(path);
    } catch {
      return; // a build that never wrote a line
    }
    yield* readLogFile(path, afterSeq, 0, signal);
  }
}
