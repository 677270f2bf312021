// Small files written whole or not at all: write beside, then rename over.
import { randomBytes } from "node:crypto";
import { rename, writeFile, rm } from "node:fs/promises";

export async function writeFileAtomic(path: string, data: string): Promise<void> {
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, data, { mode: 0o600 });
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
