// Masks secret values in text before it is stored or sent: the value itself, its URL and JSON
// encodings, and its base64 encoding at each of the three byte alignments it can have inside a
// longer encoded string (a Basic auth header is base64("user:" + password)). One masker per
// build, applied where every log line, record error and kilnd log message passes.

export const MASK = "***";
/** Shorter values are not masked (they would mask half of every line) and are refused as secrets. */
export const MIN_SECRET_LENGTH = 4;

export interface Masker {
  mask(text: string): string;
  /**
   * For a line that was cut: also masks an end of it that is the start of a value, which the
   * cut may have split (the rest of the value is gone with the rest of the line).
   */
  maskCut(text: string): string;
  /** Adds values (and their encodings) to mask from now on. */
  add(...values: string[]): void;
  readonly size: number;
}

export function createMasker(values: Iterable<string> = []): Masker {
  const needles = new Set<string>();
  let sorted: string[] = [];
  const m: Masker = {
    mask(text) {
      if (sorted.length === 0 || text === "") return text;
      let out = text;
      // Longest first: a value that contains another is masked whole.
      for (const n of sorted) if (out.includes(n)) out = out.split(n).join(MASK);
      return out;
    },
    maskCut(text) {
      const out = m.mask(text);
      for (let i = Math.max(0, out.length - (sorted[0]?.length ?? 0)); i < out.length; i++) {
        const tail = out.slice(i);
        if (sorted.some((n) => n.startsWith(tail))) return out.slice(0, i) + MASK;
      }
      return out;
    },
    add(...vals) {
      for (const v of vals) for (const n of variants(v)) needles.add(n);
      sorted = [...needles].sort((a, b) => b.length - a.length);
    },
    get size() {
      return needles.size;
    },
  };
  m.add(...values);
  return m;
}

/** The forms a value takes in output: raw, each line of it, URL-, JSON- and base64-encoded. */
export function variants(value: string): string[] {
  if (value.length < MIN_SECRET_LENGTH) return [];
  const out = new Set<string>([value]);
  // A multi-line secret (a key file) printed line by line.
  for (const line of value.split(/\r?\n/)) if (line.trim().length >= MIN_SECRET_LENGTH) out.add(line);
  out.add(encodeURIComponent(value));
  out.add(JSON.stringify(value).slice(1, -1));
  for (const b of base64Forms(value)) out.add(b);
  return [...out].filter((n) => n.length >= MIN_SECRET_LENGTH);
}

/**
 * The characters of base64 that depend only on the value's own bytes (kept when there are 6 or
 * more: shorter fragments would mask unrelated base64; values of 6 bytes or more are covered), for a value starting at
 * byte offset 0, 1 or 2 of a 3-byte group: whatever precedes or follows it, these characters
 * appear in the encoding of any string that contains the value. (Also in the base64url alphabet.)
 */
function base64Forms(value: string): string[] {
  const bytes = Buffer.from(value, "utf8");
  const forms: string[] = [];
  for (let offset = 0; offset < 3; offset++) {
    const padded = Buffer.concat([Buffer.alloc(offset), bytes]);
    const enc = padded.toString("base64").replace(/=+$/, "");
    // Leading characters mix in the unknown prefix bytes; trailing ones the unknown suffix.
    const head = offset === 0 ? 0 : offset === 1 ? 2 : 3;
    const totalBits = padded.length * 8;
    const fullChars = Math.floor(totalBits / 6);
    const s = enc.slice(head, fullChars);
    if (s.length >= 6) {
      forms.push(s);
      forms.push(s.replace(/\+/g, "-").replace(/\//g, "_"));
    }
  }
  return forms;
}
