// Paths inside a checkout (Containerfile, context): relative, without '..', and, once the commit
// is on disk, not leading out of the checkout through a symlink.
import { realpath } from "node:fs/promises";
import { isAbsolute, normalize, relative, resolve, sep } from "node:path";
import { invalidArgument, KilnError } from "../errors/kiln-error.js";

const MAX_PATH = 1024;

/** Checks the syntax of a repository-relative path and returns it normalised. */
export function checkRepoPath(value: string, field: string): string {
  if (value.length > MAX_PATH) throw invalidArgument(field, `is longer than ${MAX_PATH} characters`);
  if (/[\x00-\x1f\x7f]/.test(value)) throw invalidArgument(field, "contains control characters");
  if (isAbsolute(value) || value.startsWith("\\")) throw invalidArgument(field, "must be relative to the repository root");
  if (value.split(/[\\/]+/).includes("..")) throw invalidArgument(field, "must not contain '..'");
  if (value.startsWith("-")) throw invalidArgument(field, "must not start with '-'");
  // "./", "src/" and "src" are one directory: one spelling, so the fast path's key and paths agree.
  const n = normalize(value).replace(/(.)\/+$/, "$1");
  return n === "" || n === "./" ? "." : n;
}

/** Resolves a checked path inside root, following symlinks, and refuses one that leaves root. */
export async function resolveInside(root: string, path: string, field: string): Promise<string> {
  const realRoot = await realpath(root);
  let real: string;
  try {
    real = await realpath(resolve(realRoot, path));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new KilnError("failed_precondition", `${field}: ${JSON.stringify(path)} does not exist in the commit`);
    }
    if (code === "ELOOP") throw invalidArgument(field, `${JSON.stringify(path)} is a symlink loop`);
    throw e;
  }
  const rel = relative(realRoot, real);
  if (rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
    throw invalidArgument(field, `${JSON.stringify(path)} leads out of the checkout through a symlink`);
  }
  return real;
}
