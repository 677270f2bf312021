// A process's output as lines, read as bytes. A line is cut once it passes maxBytes, and what
// comes after the cut up to the next newline is dropped as it arrives: a step that prints a
// gigabyte without a newline costs maxBytes of memory, not a gigabyte (readline would build the
// whole line first, and a string that long ends the process).
// Progress output rewrites a line with \r: a line keeps what it finally says.

const NL = 0x0a;
const CR = 0x0d;

export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes dropped from the line being read (after its cut). */
  private dropped = 0;
  private endsWithCr = false;

  constructor(
    private readonly maxBytes: number,
    /** dropped: how many bytes of the line were not kept after its cut (0 for a whole line). */
    private readonly onLine: (text: string, dropped: number) => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NL, start);
      if (nl < 0) break;
      this.take(chunk.subarray(start, nl));
      this.emit();
      start = nl + 1;
    }
    if (start < chunk.length) this.take(chunk.subarray(start));
  }

  /** The process ended: a last line without a newline is a line too. */
  end(): void {
    if (this.pendingBytes > 0 || this.dropped > 0) this.emit();
  }

  private take(part: Buffer): void {
    if (part.length === 0) return;
    // A \r that is not the line's last byte starts the line over (one left at the end of the
    // last chunk included, now that more of the line came).
    const cr = part.subarray(0, part.length - 1).lastIndexOf(CR);
    if (cr >= 0 || this.endsWithCr) {
      this.pending = [];
      this.pendingBytes = 0;
      this.dropped = 0;
      part = part.subarray(cr + 1);
    }
    this.endsWithCr = part[part.length - 1] === CR;
    if (this.dropped > 0) {
      this.dropped += part.length;
      return;
    }
    const room = this.maxBytes - this.pendingBytes;
    if (part.length > room) {
      this.pending.push(part.subarray(0, room));
      this.pendingBytes += room;
      this.dropped = part.length - room;
      return;
    }
    this.pending.push(part);
    this.pendingBytes += part.length;
  }

  private emit(): void {
    let bytes = Buffer.concat(this.pending, this.pendingBytes);
    if (bytes.length > 0 && bytes[bytes.length - 1] === CR) bytes = bytes.subarray(0, -1);
    let text = bytes.toString("utf8");
    const dropped = this.dropped;
    // The cut may split a character: its replacement character is not part of the output.
    if (dropped > 0) text = text.replace(/\uFFFD$/, "");
    this.pending = [];
    this.pendingBytes = 0;
    this.dropped = 0;
    this.endsWithCr = false;
    this.onLine(text, dropped);
  }
}
