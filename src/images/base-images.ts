// The FROM images of a Containerfile, resolved on every build as BuildKit resolves them: each
// tag is looked up at its registry (one HEAD of its manifest) and the Containerfile is built
// pinned to the digest found (FROM name:tag@sha256:…), so a base tag that moved is pulled and
// built on, and the record says which digest each FROM was. A FROM already pinned needs no
// look-up; stages and scratch are not images. A FROM kiln cannot read for sure (an ARG it cannot
// expand) is left to buildah, which then pulls when newer (the full build stays right; the fast
// path steps aside).
import { DockerfileParser } from "dockerfile-ast";

export interface FromLine {
  /** Offsets of the image argument in the text. */
  from: number;
  to: number;
  /** As written, and after ARG expansion (undefined when kiln cannot expand it for sure). */
  written: string;
  image?: string;
  /** The name of a previous stage, or scratch: not an image. */
  notImage: boolean;
}

const VAR = /\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g;

/** Every FROM's image argument, expanded with the global ARGs (their defaults, then the build args). */
export function fromLines(text: string, buildArgs: Record<string, string>): FromLine[] {
  const lineStarts = [0];
  for (let i = 0; i < text.length; i++) if (text[i] === "\n") lineStarts.push(i + 1);
  const offset = (p: { line: number; character: number }) => lineStarts[p.line]! + p.character;
  const file = DockerfileParser.parse(text);
  const globals = new Map<string, string | undefined>();
  const stages = new Set<string>();
  const out: FromLine[] = [];
  let seenFrom = false;
  for (const ins of file.getInstructions()) {
    const kw = ins.getKeyword();
    if (kw === "ARG" && !seenFrom) {
      const arg = ins.getArgumentsContent() ?? "";
      const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$/.exec(arg.trim());
      if (m) globals.set(m[1]!, buildArgs[m[1]!] ?? unquote(m[2]));
      continue;
    }
    if (kw !== "FROM") continue;
    seenFrom = true;
    const args = ins.getArguments().filter((a) => !a.getValue().startsWith("--"));
    const imageArg = args[0];
    if (!imageArg) continue;
    const range = imageArg.getRange();
    const written = imageArg.getValue();
    let unsure = false;
    const image = written.replace(VAR, (_, a: string | undefined, b: string | undefined) => {
      const v = globals.get((a ?? b)!);
      if (v === undefined) unsure = true;
      return v ?? "";
    });
    const expanded = unsure || /[${}\\"']/.test(image) ? undefined : image;
    const name = args[1]?.getValue().toLowerCase() === "as" ? args[2]?.getValue().toLowerCase() : undefined;
    const notImage = expanded !== undefined && (expanded.toLowerCase() === "scratch" || stages.has(expanded.toLowerCase()));
    out.push({ from: offset(range.start), to: offset(range.end), written, ...(expanded !== undefined ? { image: expanded } : {}), notImage });
    if (name) stages.add(name);
  }
  return out;
}

const unquote = (v: string | undefined) => (v === undefined ? undefined : /^(["'])(.*)\1$/.exec(v)?.[2] ?? v);

export interface ImageName {
  registry: string;
  repository: string;
  tag: string;
  digest?: string;
}

/** registry.example:5000/team/app:tag[@sha256:…]; undefined for names without a registry host. */
export function parseImageName(ref: string): ImageName | undefined {
  const at = ref.indexOf("@");
  const digest = at >= 0 ? ref.slice(at + 1) : undefined;
  const name = at >= 0 ? ref.slice(0, at) : ref;
  const slash = name.indexOf("/");
  const host = slash > 0 ? name.slice(0, slash) : "";
  // localhost/... is podman's local namespace: in storage only, no registry to ask.
  if (!/[.:]/.test(host)) return undefined;
  const rest = name.slice(slash + 1);
  const colon = rest.lastIndexOf(":");
  const repository = colon > rest.lastIndexOf("/") && colon >= 0 ? rest.slice(0, colon) : rest;
  const tag = colon > rest.lastIndexOf("/") && colon >= 0 ? rest.slice(colon + 1) : "latest";
  if (!repository) return undefined;
  return { registry: host, repository, tag, ...(digest ? { digest } : {}) };
}

/** The text with each resolved FROM pinned: name:tag@digest. */
export function pinFromLines(text: string, pins: { line: FromLine; digest: string }[]): string {
  let out = text;
  for (const p of [...pins].sort((a, b) => b.line.from - a.line.from)) {
    out = `${out.slice(0, p.line.from)}${p.line.image}@${p.digest}${out.slice(p.line.to)}`;
  }
  return out;
}
