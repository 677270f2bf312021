// The secret mounts of a Containerfile, made part of the layer cache. buildah keys a RUN step's
// cache on its text, so a changed secret value would reuse the layer made with the old one.
// kiln renames the secret each RUN mounts to `ID.kiln-DIGEST` (the digest of its value, see
// cache-key.ts) and mounts it where the original id would have gone (target=/run/secrets/ID):
// the step sees the same file, and its text changes exactly when the value does. The text of
// the Containerfile is otherwise untouched.
import { DockerfileParser } from "dockerfile-ast";
import { KilnError } from "../errors/kiln-error.js";

export interface SecretMountPlan {
  text: string;
  /** buildah --secret arguments: the name the Containerfile now uses -> the request's id. */
  renamed: Map<string, string>;
  /** Request ids that some RUN mounts. */
  used: Set<string>;
}

export const secretFileId = (id: string, digest: string) => `${id}.kiln-${digest}`;

/** Rewrites every RUN --mount=type=secret whose id the request has a value for. */
export function planSecretMounts(text: string, digests: ReadonlyMap<string, string>, file = "Containerfile"): SecretMountPlan {
  const renamed = new Map<string, string>();
  const used = new Set<string>();
  if (!/--mount/i.test(text)) return { text, renamed, used };
  const lineStarts = [0];
  for (let i = 0; i < text.length; i++) if (text[i] === "\n") lineStarts.push(i + 1);
  const offset = (p: { line: number; character: number }) => lineStarts[p.line]! + p.character;
  const edits: { from: number; to: number; value: string }[] = [];
  for (const ins of DockerfileParser.parse(text).getInstructions()) {
    if (ins.getKeyword() !== "RUN") continue;
    const flags = (ins as unknown as { getFlags(): import("dockerfile-ast").Flag[] }).getFlags();
    for (const flag of flags) {
      if (flag.getName().toLowerCase() !== "mount") continue;
      const value = flag.getValue() ?? "";
      const options = parseMount(value);
      if ((options.get("type") ?? "bind") !== "secret") continue;
      const where = `${file} line ${ins.getRange().start.line + 1}`;
      if (/["']/.test(value)) throw new KilnError("failed_precondition", `${where}: a quoted --mount=type=secret is not supported; write it unquoted`);
      if (options.has("env")) {
        throw new KilnError("failed_precondition", `${where}: --mount=type=secret,env= is not supported by this buildah; read the secret from its file (/run/secrets/ID, or target=PATH)`);
      }
      const id = options.get("id") ?? "";
      const digest = digests.get(id);
      if (!id || digest === undefined) continue;
      used.add(id);
      const newId = secretFileId(id, digest);
      renamed.set(newId, id);
      const target = options.get("target") ?? options.get("dst") ?? options.get("destination");
      const rewritten = [...options].map(([k, v]) => (k === "id" ? `id=${newId}` : v === undefined ? k : `${k}=${v}`));
      if (target === undefined) rewritten.push(`target=/run/secrets/${id}`);
      const range = flag.getValueRange()!;
      const from = offset(range.start);
      const to = offset(range.end);
      // Only a value written on one line, exactly as parsed, is rewritten.
      if (text.slice(from, to) !== value) throw new KilnError("failed_precondition", `${where}: this --mount=type=secret is split over lines; write it on one`);
      edits.push({ from, to, value: rewritten.join(",") });
    }
  }
  let out = text;
  for (const e of edits.sort((a, b) => b.from - a.from)) out = out.slice(0, e.from) + e.value + out.slice(e.to);
  return { text: out, renamed, used };
}

/** "type=secret,id=npm,required" as an ordered map (a bare key has no value). */
function parseMount(value: string): Map<string, string | undefined> {
  const m = new Map<string, string | undefined>();
  for (const part of value.split(",")) {
    if (!part) continue;
    const i = part.indexOf("=");
    m.set((i < 0 ? part : part.slice(0, i)).toLowerCase(), i < 0 ? undefined : part.slice(i + 1));
  }
  return m;
}
