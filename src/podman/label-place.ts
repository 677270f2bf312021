// Where kiln's LABEL line goes in a Containerfile (see labels.ts for why there). Its own module
// so that the parser loads on first use, not at kilnd's start-up.
import { DockerfileParser } from "dockerfile-ast";

/**
 * Instructions kiln's LABEL may go before: they change the config but neither the filesystem
 * nor the labels, and a LABEL with plain values reads nothing they set. WORKDIR (buildah creates
 * the directory), VOLUME, ONBUILD, LABEL and the steps that write files stay after it.
 */
const METADATA_ONLY = new Set(["CMD", "ENTRYPOINT", "USER", "EXPOSE", "ENV", "ARG", "STOPSIGNAL", "HEALTHCHECK", "SHELL"]);

/**
 * Where kiln's LABEL line goes in text: the offset of the line after the final stage's last
 * instruction that is not METADATA_ONLY (the end of the text when that is the last one), or
 * undefined when it cannot go in (the target is not the last stage, a line continuation there).
 */
export function labelPlace(text: string, target: string | undefined): number | undefined {
  const file = DockerfileParser.parse(text);
  const froms = file.getFROMs();
  const finalFrom = froms.at(-1);
  if (!finalFrom) return undefined;
  if (target && finalFrom.getBuildStage()?.toLowerCase() !== target.toLowerCase()) return undefined;
  const all = file.getInstructions();
  const stage = all.slice(all.indexOf(finalFrom));
  let last = stage.length - 1;
  // A heredoc's body is lines of text a parser may read as instructions: the LABEL goes last.
  const heredoc = stage.some((i) => i.getArgumentsContent()?.includes("<<"));
  while (!heredoc && last > 0 && METADATA_ONLY.has(stage[last]!.getKeyword())) last--;
  const lines = text.split("\n");
  if (last === stage.length - 1) {
    const lastCode = [...lines].reverse().find((l) => l.trim() !== "" && !l.trim().startsWith("#"));
    return lastCode === undefined || /[\\`]\s*$/.test(lastCode) ? undefined : text.length;
  }
  const endLine = stage[last]!.getRange().end.line;
  if (/[\\`]\s*$/.test(lines[endLine] ?? "\\")) return undefined;
  return lines.slice(0, endLine + 1).reduce((n, l) => n + l.length + 1, 0);
}
