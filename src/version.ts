// kiln's version, from package.json: one level above src/ and dist/, two above dist/bin/ (where
// kilnd's bundle lives).
import { readFileSync } from "node:fs";

function readVersion(): string {
  for (const rel of ["../package.json", "../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "kiln" && pkg.version) return pkg.version;
    } catch {
      // not here
    }
  }
  return "unknown";
}

export const VERSION: string = readVersion();
