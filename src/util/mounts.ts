// The mount table, as this process sees it (/proc/self/mountinfo writes a space as \040).
import { readFile } from "node:fs/promises";

export async function mountPoints(): Promise<string[]> {
  const info = await readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  return info
    .split("\n")
    .map((l) => (l.split(" ")[4] ?? "").replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter(Boolean);
}
