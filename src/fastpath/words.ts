// A COPY's arguments as buildah reads them, or a refusal when kiln cannot be sure it reads them
// the same way. The JSON form is a JSON array of strings; the shell form is split on whitespace
// and each word then has its quotes removed. Only the readings both parsers certainly agree on
// are taken: plain words, and words wholly in one pair of quotes with nothing inside that a
// shell would treat specially. Variables ($), escapes (\) and quotes inside a word are refused.
export type Words = { ok: true; words: string[] } | { ok: false; reason: string };

const PLAIN = /^[^"'\\$\s]+$/;
const QUOTED = /^(["'])([^"'\\$]*)\1$/;

export function copyWords(content: string): Words {
  const text = content.trim();
  if (text.startsWith("[")) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return { ok: false, reason: "a COPY looks like the JSON form but is not JSON" };
    }
    if (!Array.isArray(parsed) || !parsed.every((w) => typeof w === "string")) return { ok: false, reason: "a COPY's JSON form is not a list of strings" };
    if (parsed.some((w: string) => w.includes("$"))) return { ok: false, reason: "a COPY uses variables" };
    return { ok: true, words: parsed as string[] };
  }
  const words: string[] = [];
  for (const raw of text.split(/\s+/).filter(Boolean)) {
    if (PLAIN.test(raw)) {
      words.push(raw);
      continue;
    }
    const q = QUOTED.exec(raw);
    if (q && q[2] !== "") {
      words.push(q[2]!);
      continue;
    }
    return { ok: false, reason: raw.includes("$") ? "a COPY uses variables" : `a COPY argument (${raw.slice(0, 40)}) has quotes or escapes kiln does not read as buildah would` };
  }
  return { ok: true, words };
}
