// Temporary directories for tests, and their removal (bench/lib/remove-tree.ts: overlay mounts first).
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `kiln-test-${prefix}-`));
}

export { removeTree, unmountBelow } from "../../bench/lib/remove-tree.js";
