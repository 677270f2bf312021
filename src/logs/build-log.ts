// One build's log: append-only numbered lines, written to the volume and fanned out to readers
// (src/fanout/feed.ts). kilnd keeps the newest lines in memory, a bounded window; a reader that
// falls behind it reads on from the file. A line is written to the file before any reader sees
// it, so a line someone has seen survives a kill -9 of kilnd (a small synchronous append per
// line; lines come at the pace of a build). What one build can store is bounded too: past
// maxFileBytes its lines are counted, not kept, and the log says so at its end.
import { closeSync, createReadStream, openSync, writeSync } from "node:fs";
import { createInterface } from "node:readline";
import { Feed } from "../fanout/feed.js";
import { LogStream, Phase } from "../gen/kiln/v1/builder_pb.js";

export interface LogEntry {
  seq: number;
  /** ms since the epoch */
  time: number;
  text: string;
  stream: LogStream;
  phase: Phase;
}

export interface LogLimits {
  /** Lines kept in memory for live readers. */
  memoryLines: number;
  /** Characters of text kept in memory for live readers. */
  memoryChars: number;
  /** Bytes one build's log file may take on the volume. */
  maxFileBytes: number;
}

export const DEFAULT_LOG_LIMITS: LogLimits = { memoryLines: 20_000, memoryChars: 4 * 1024 * 1024, maxFileBytes: 256 * 1024 * 1024 };

// Where every 1024th line starts in the file: a reader behind the window starts near its line.
const CHECKPOINT_EVERY = 1024;

export class BuildLog {
  private readonly feed: Feed<LogEntry>;
  private fd: number | undefined;
  private fileBytes = 0;
  private readonly checkpoints: number[] = [0];
  private notKept = { lines: 0, bytes: 0 };

  /** mask is applied to every line before it is stored or anyone sees it (secrets become ***). */
  constructor(
    readonly path: string,
    private readonly mask: (text: string) => string = (t) => t,
    private readonly limits: LogLimits = DEFAULT_LOG_LIMITS,
  ) {
    this.fd = openSync(path, "a", 0o600);
    this.feed = new Feed<LogEntry>({
      maxEntries: limits.memoryLines,
      maxWeight: limits.memoryChars,
      weigh: (e) => e.text.length,
      older: (afterSeq, signal) => this.fromFile(afterSeq, signal),
    });
  }

  /** Lines held in memory now. */
  get inMemory(): number {
    return this.feed.inMemory;
  }

  append(text: string, stream: LogStream, phase: Phase): LogEntry | undefined {
    if (this.feed.closed) return undefined;
    const masked = this.mask(text);
    const time = Date.now();
    // The feed numbers entries one after another: this line's seq is known before it is appended.
    const entry: LogEntry = { seq: this.feed.lastSeq + 1, time, text: masked, stream, phase };
    const line = `${JSON.stringify(encode(entry))}\n`;
    const bytes = Buffer.byteLength(line);
    if (this.fileBytes + bytes > this.limits.maxFileBytes) {
      this.notKept.lines++;
      this.notKept.bytes += bytes;
      return undefined;
    }
    return this.feed.append(() => {
      this.write(entry.seq, line);
      return entry;
    });
  }

  async close(): Promise<void> {
    if (this.feed.closed) return;
    if (this.notKept.lines > 0) {
      // Past the limit on purpose: this one line says what is missing.
      const { lines, bytes } = this.notKept;
      const text = `log: ${lines} more lines (${bytes} bytes) were not kept: one build's log is limited to ${this.limits.maxFileBytes} bytes`;
      this.feed.append((seq) => {
        const entry: LogEntry = { seq, time: Date.now(), text, stream: LogStream.SYSTEM, phase: Phase.UNSPECIFIED };
        this.write(seq, `${JSON.stringify(encode(entry))}\n`);
        return entry;
      });
    }
    this.feed.close();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  /** Lines after afterSeq; with follow, waits for new ones until the log closes or signal aborts. */
  read(afterSeq: number, follow: boolean, signal?: AbortSignal): AsyncGenerator<LogEntry> {
    return this.feed.read(afterSeq, { follow, ...(signal ? { signal } : {}) });
  }

  private write(seq: number, line: string): void {
    if (this.fd === undefined) return;
    try {
      const n = writeSync(this.fd, line);
      if (seq % CHECKPOINT_EVERY === 1) this.checkpoints[(seq - 1) / CHECKPOINT_EVERY] = this.fileBytes;
      this.fileBytes += n;
    } catch {
      // A full disk must not stop the build: live readers still get the line from memory.
    }
  }

  private fromFile(afterSeq: number, signal?: AbortSignal): AsyncIterable<LogEntry> {
    const k = Math.min(Math.floor(afterSeq / CHECKPOINT_EVERY), this.checkpoints.length - 1);
    return readLogFile(this.path, afterSeq, this.checkpoints[k] ?? 0, signal);
  }
}

/** A log file's entries after afterSeq, reading from byte offset start. */
export async function* readLogFile(path: string, afterSeq: number, start = 0, signal?: AbortSignal): AsyncGenerator<LogEntry> {
  const input = createReadStream(path, { encoding: "utf8", start });
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

// On disk, one JSON object a line with short keys: logs of big builds stay small.
interface StoredEntry {
  s: number;
  t: number;
  o: number;
  p: number;
  x: string;
}

const encode = (e: LogEntry): StoredEntry => ({ s: e.seq, t: e.time, o: e.stream, p: e.phase, x: e.text });

export const decodeEntry = (line: string): LogEntry | undefined => {
  try {
    const v = JSON.parse(line) as StoredEntry;
    if (typeof v.s !== "number" || typeof v.x !== "string") return undefined;
    return { seq: v.s, time: v.t, text: v.x, stream: v.o as LogStream, phase: v.p as Phase };
  } catch {
    return undefined; // a torn last line after a crash
  }
};
