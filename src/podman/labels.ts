// kiln's image labels in one Containerfile step. podman build turns every --label into a step
// of its own, each an image commit (six labels cost over a second on a warm build); one LABEL
// line in a copy of the Containerfile costs one. The line goes before the final stage's trailing
// metadata steps (CMD, USER, EXPOSE, ENV, ...), right after its last step that writes files or
// labels: buildah spends most of a metadata step resolving the USER and WORKDIR it runs with
// (USER nobody made a LABEL step after it cost ~250 ms against ~70 ms before it, session 17),
// and those steps can set no label, so the image's config is the same either way; only the
// history's order differs. When that cannot be done safely (a --target that is not the last
// stage, a value the parser would expand, a line continuation where the line would go), the
// labels go as --label flags instead.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

export interface LabelPlan {
  /** The Containerfile to build: the original, or kiln's copy with the LABEL line. */
  containerfile: string;
  /** Labels still to pass as --label. */
  flagLabels: Record<string, string>;
}

const SAFE_VALUE = /^[^"\\$`\r\n]*$/;

/**
 * edit, when given, rewrites the Containerfile's text first (the secret mounts); the copy is
 * written whenever it changed the text, whether the labels go in it or as flags.
 */
export async function planLabels(
  containerfile: string,
  target: string | undefined,
  labels: Record<string, string>,
  tmpDir: string,
  edit?: (text: string) => Promise<string>,
): Promise<LabelPlan> {
  const original = await readFile(containerfile, "utf8");
  const text = edit ? await edit(original) : original;
  const copy = join(tmpDir, "Containerfile");
  const fallback = async () => {
    if (text === original) return { containerfile, flagLabels: labels };
    await writeFile(copy, text);
    return { containerfile: copy, flagLabels: labels };
  };
  if (!Object.values(labels).every((v) => SAFE_VALUE.test(v))) return fallback();
  // Loaded on first use, as the fast path's parser is: it is not part of kilnd's start-up. A
  // module of ours, not dockerfile-ast itself: a CommonJS package imported dynamically from the
  // bundle has no named exports.
  const { labelPlace } = await import("./label-place.js");
  const at = labelPlace(text, target);
  if (at === undefined) return fallback();
  const line = `${labelLine(labels)}\n`;
  const before = text.slice(0, at);
  await writeFile(copy, `${before}${before === "" || before.endsWith("\n") ? "" : "\n"}${line}${text.slice(at)}`);
  return { containerfile: copy, flagLabels: {} };
}

/** The LABEL step kiln writes (the fast path writes the same text into the image's history). */
export const labelLine = (labels: Record<string, string>) => `LABEL ${Object.entries(labels).map(([k, v]) => `"${k}"="${v}"`).join(" ")}`;
