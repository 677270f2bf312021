// Build logs on the volume: live logs in memory for followers, finished ones replayed from disk.
import { createReadStream } from "node:fs";
import { access } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { BuildLog, decodeEntry, type LogEntry } from "./build-log.js";

export class LogStore {
  private readonly live = new Map<string, BuildLog>();
  private readers = 0;

  constructor(private readonly dir: string) {}

  pathOf(buildId: string): string {
    return join(this.dir, `${buildId}.log`);
  }

  open(buildId: string, mask?: (text: string) => string): BuildLog {
    const log = new BuildLog(this.pathOf(buildId), mask);
    this.live.set(buildId, log);
    return log;
  }

  async finish(buildId: string): Promise<void> {
    const log = this.live.get(buildId);
    if (!log) return;
    await log.close();
    this.live.delete(buildId);
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
    const input = createReadStream(path, { encoding: "utf8" });
    const rl = createInterface({ input, crlfDelay: Infinity });
    try {
      for await (const line of rl) {
        if (signal?.aborted) return;
        const e = decodeEntry(line);
        if (e && e.seq > afterSeq) yield e;
      }
    } finally {
      rl.close();
      input.destroy();
    }
  }
}
