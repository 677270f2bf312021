// A build's timed output read as phases and steps: where the time between "build this commit"
// and "the pushed digest" went, for kiln (its log, stamped by kilnd), buildah or podman by hand
// (their output as it arrived) and BuildKit (its plain progress: each step's own DONE time).
import type { TimedLine } from "../engines/engine.js";

export interface Segment {
  /** "kiln: fetch", "step: COPY src/ ./src/", "push", ... */
  label: string;
  ms: number;
  /** A step the engine took from its cache. */
  cached?: boolean;
}

/** Lines that start a segment of a kiln, buildah or podman timeline, and its name. */
const BOUNDARIES: [RegExp, (m: RegExpExecArray) => string][] = [
  [/^bench: (.*)/, (m) => `bench: ${m[1]}`],
  [/^accepted: /, () => "kiln: accepted"],
  [/^fetch: [0-9a-f]{7}/, () => "kiln: fetch, checkout"],
  [/^fetch: (fetched|in cache)/, () => "kiln: base look-up, labels, slot"],
  [/^base: \S+: unpacking \d+ of/, () => "kiln: base layers unpacked side by side"],
  [/^base: \S+ (is|not looked up)/, () => "kiln: changes, final COPY's layer, image mount"],
  // A first build: buildah's prefix (its STEP lines below), then kiln's steps as the fast path runs them.
  [/^first build: \S+ is new to storage/, () => "kiln: first build's prefix, buildah's start"],
  [/^COMMIT localhost\/kiln-stage\//, () => "kiln: prefix committed; kiln's COPY layers"],
  [/^(?:fast path|first build): mounted the image below/, () => "kiln: COPY layer written, overlay"],
  [/^(?:fast path|first build): RUN (.*)/, (m) => `step: RUN (kiln) ${m[1]!.slice(0, 54)}`],
  [/^(?:fast path|first build): step \d+ ran in/, () => "kiln: RUN's upper directory read as a layer"],
  [/^(?:fast path|first build): step \d+'s layer read/, () => "kiln: layers compressed, later steps"],
  [/^fast path: layers made/, () => "kiln: fast path's push"],
  [/^first build: layers made/, () => "kiln: the skeleton's config, the push"],
  [/^build: (buildah|podman) /, () => "podman: start"],
  [/^build: sha256:/, () => "kiln: after podman (stage tags)"],
  [/^push: (podman push|kiln's push of)/, () => "push"],
  [/^push: \S+@sha256:/, () => "kiln: after push"],
  [/^(?:\[(\d+)\/\d+\] )?STEP \d+\/\d+: (.*)/, (m) => `step: ${m[1] ? `[${m[1]}] ` : ""}${m[2]!.slice(0, 60)}`],
  [/^COMMIT\b/, () => "final commit, tag"],
];

/** Consecutive segments of a kiln, buildah or podman timeline (the last line ends the last one). */
export function segmentsOf(lines: readonly TimedLine[]): Segment[] {
  const out: (Segment & { at: number })[] = [];
  for (const l of lines) {
    if (/^--> Using cache /.test(l.text) && out.length) out.at(-1)!.cached = true;
    for (const [re, name] of BOUNDARIES) {
      const m = re.exec(l.text);
      if (!m) continue;
      const prev = out.at(-1);
      if (prev) prev.ms = l.ms - prev.at;
      out.push({ label: name(m), ms: 0, at: l.ms });
      break;
    }
  }
  // The bench's own end mark is where the last segment stops, not a segment.
  if (out.at(-1)?.label === "bench: end") out.pop();
  return out.map(({ at: _at, ...s }) => s);
}

/**
 * BuildKit's plain progress: the bench's marks as segments, and each vertex ("#8 [build 3/4]
 * RUN npx tsc") with the duration BuildKit printed for it ("#8 DONE 1.2s", or CACHED). Stages
 * run side by side in BuildKit, so its steps overlap and do not add up to the build.
 */
export function buildkitSegmentsOf(lines: readonly TimedLine[]): Segment[] {
  const marks = segmentsOf(lines.filter((l) => l.text.startsWith("bench: ")));
  const vertices = new Map<string, Segment>();
  for (const l of lines) {
    const start = /^#(\d+) (\[[^\]]+\] .*|exporting to image|pushing layers|writing image.*)$/.exec(l.text);
    if (start && !vertices.has(start[1]!)) vertices.set(start[1]!, { label: `  buildkit: ${start[2]!.slice(0, 60)}`, ms: 0 });
    const done = /^#(\d+) (DONE ([\d.]+)s|CACHED)$/.exec(l.text);
    const v = done && vertices.get(done[1]!);
    if (v) {
      if (done[2] === "CACHED") v.cached = true;
      else v.ms = Number(done[3]) * 1000;
    }
  }
  const build = marks.findIndex((s) => s.label === "bench: docker build");
  return [...marks.slice(0, build + 1), ...vertices.values(), ...marks.slice(build + 1)];
}

/** The engine's timeline as segments. */
export const profileOf = (engine: string, lines: readonly TimedLine[]) => (engine === "buildkit" ? buildkitSegmentsOf(lines) : segmentsOf(lines));
