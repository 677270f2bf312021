// kiln's image labels in one Containerfile step. podman build turns every --label into a step
// of its own, each an image commit (six labels cost over a second on a warm build); one LABEL
// line appended to a copy of the Containerfile costs one. When that cannot be done safely (a
// --target that is not the last stage, a value the parser would expand, a trailing line
// continuation), the labels go as --label flags instead.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

export interface LabelPlan {
  /** The Containerfile to build: the original, or kiln's copy with the LABEL line. */
  containerfile: string;
  /** Labels still to pass as --label. */
  flagLabels: Record<string, string>;
}

const SAFE_VALUE = /^[^"\\$`\r\n]*$/;
const FROM = /^\s*FROM\s/i;

/** Names the stage a FROM line declares ("FROM x AS name"), if any. */
const stageName = (line: string) => /\sAS\s+(\S+)\s*$/i.exec(line)?.[1]?.toLowerCase();

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
  const lines = text.split(/\r?\n/);
  const lastCode = [...lines].reverse().find((l) => l.trim() !== "" && !l.trim().startsWith("#"));
  if (lastCode === undefined || /[\\`]\s*$/.test(lastCode)) return fallback();
  if (target) {
    const froms = lines.filter((l) => FROM.test(l));
    if (stageName(froms.at(-1) ?? "") !== target.toLowerCase()) return fallback();
  }
  const line = labelLine(labels);
  await writeFile(copy, `${text}${text.endsWith("\n") ? "" : "\n"}${line}\n`);
  return { containerfile: copy, flagLabels: {} };
}

/** The LABEL step kiln appends (the fast path writes the same text into the image's history). */
export const labelLine = (labels: Record<string, string>) => `LABEL ${Object.entries(labels).map(([k, v]) => `"${k}"="${v}"`).join(" ")}`;
