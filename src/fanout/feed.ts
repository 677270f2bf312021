// kiln's one fan-out design (build logs in kilnd, deployment events in the scheduler): an
// append-only numbered list and a cursor per reader. Readers pull at their own pace from the
// shared list; the writer never waits for anyone and nothing is queued per reader, so a stalled
// reader costs nothing. The list keeps a bounded window of the newest entries in memory; a reader
// that falls behind it reads the older ones from `older` (the log file on the volume), or, with
// no such source, is told how many it missed (onGap) and goes on from the window.
// A reader takes its position when read() is called, not when it first pulls: whatever is
// appended after the call reaches it.

export interface Numbered {
  readonly seq: number;
}

export interface FeedOptions<T extends Numbered> {
  /** Entries kept in memory at most. */
  maxEntries: number;
  /** With weigh: the total weight (bytes, say) kept in memory at most. */
  maxWeight?: number;
  weigh?: (e: T) => number;
  /** Entries after afterSeq from wherever they are kept beyond memory, in order. */
  older?: (afterSeq: number, signal?: AbortSignal) => AsyncIterable<T>;
}

export interface ReadOptions {
  follow: boolean;
  signal?: AbortSignal;
  /** Called when entries the reader had not read were no longer there (no `older` source). */
  onGap?: (missed: number) => void;
}

export class Feed<T extends Numbered> {
  private window: T[] = [];
  /** Index into window of its first live entry (entries before it are dropped lazily). */
  private head = 0;
  private weight = 0;
  private last = 0;
  private closedFlag = false;
  private wake: (() => void) | undefined;
  private next: Promise<void>;

  constructor(private readonly o: FeedOptions<T>) {
    this.next = new Promise((res) => (this.wake = res));
  }

  /** The newest entry's seq (0 before the first). */
  get lastSeq(): number {
    return this.last;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Entries in memory now (for tests and metrics). */
  get inMemory(): number {
    return this.window.length - this.head;
  }

  /** Appends the entry make() builds for the next seq; undefined once closed. */
  append(make: (seq: number) => T): T | undefined {
    if (this.closedFlag) return undefined;
    const e = make(this.last + 1);
    this.last = e.seq;
    this.window.push(e);
    this.weight += this.o.weigh?.(e) ?? 0;
    this.trim();
    this.notify();
    return e;
  }

  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.notify();
  }

  /**
   * Entries after afterSeq; with follow, waits for new ones until the feed closes or the signal
   * aborts. The position is taken now: nothing appended after this call is missed.
   */
  read(afterSeq: number, opts: ReadOptions): AsyncGenerator<T> {
    return this.reader(Math.max(0, Math.min(afterSeq, Number.MAX_SAFE_INTEGER)), opts);
  }

  private async *reader(afterSeq: number, opts: ReadOptions): AsyncGenerator<T> {
    let cursor = afterSeq;
    for (;;) {
      if (opts.signal?.aborted) return;
      const first = this.firstSeq;
      if (cursor < first - 1) {
        if (this.o.older) {
          for await (const e of this.o.older(cursor, opts.signal)) {
            if (e.seq >= this.firstSeq) break; // memory has it from here
            if (e.seq <= cursor) continue;
            yield e;
            cursor = e.seq;
          }
        }
        // What neither memory nor `older` has (a line a full disk did not take) is skipped.
        const now = this.firstSeq;
        if (cursor < now - 1) {
          opts.onGap?.(now - 1 - cursor);
          cursor = now - 1;
        }
        continue;
      }
      if (cursor < this.last) {
        yield this.window[this.head + (cursor - first) + 1]!;
        cursor++;
        continue;
      }
      if (!opts.follow || this.closedFlag) return;
      await this.changed(opts.signal);
    }
  }

  private get firstSeq(): number {
    return this.window[this.head]?.seq ?? this.last + 1;
  }

  private trim(): void {
    const over = () => this.window.length - this.head > this.o.maxEntries || (this.o.maxWeight !== undefined && this.weight > this.o.maxWeight && this.window.length - this.head > 1);
    while (over()) {
      this.weight -= this.o.weigh?.(this.window[this.head]!) ?? 0;
      this.head++;
    }
    // Drop the dead front in one go once it is half the array (amortised O(1) per entry).
    if (this.head > 1024 && this.head * 2 > this.window.length) {
      this.window = this.window.slice(this.head);
      this.head = 0;
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.next = new Promise((res) => (this.wake = res));
    wake?.();
  }

  private changed(signal?: AbortSignal): Promise<void> {
    if (!signal) return this.next;
    return new Promise((res) => {
      const done = () => {
        signal.removeEventListener("abort", done);
        res();
      };
      signal.addEventListener("abort", done, { once: true });
      void this.next.then(done);
    });
  }
}
