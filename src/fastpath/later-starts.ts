// After a fast build that started from an earlier COPY (a dependency change), the base's later
// starts with RUN steps after them stood on the image below them in podman's storage, which no
// longer is this image's. Each now stands on the image the build's steps ran on with the build's
// own upper directories up to its COPY stacked on it (kept as snapshots, base.ts); its
// environment, user and working directory stay the full build's (the Containerfile and build
// args are the same). A later start kiln cannot carry is dropped: the next change it would have
// taken starts from an earlier COPY again.
import type { CopyBase, FastPathBase } from "./base.js";
import { isCopyStep } from "./plan.js";

type Starts = Pick<FastPathBase, "copy" | "starts">;

export interface LaterStarts {
  /** How many of the build's upper directories (its COPY's first, then each step's) the carried starts stand on. */
  needed: number;
  /** The base's starts once those directories are kept at these paths (fewer than needed: none could be kept). */
  carry(kept: readonly string[]): Starts;
}

export function laterStarts(base: Starts, copy: CopyBase): LaterStarts {
  const after = copy.plan.after;
  // c's COPY among the steps after this one: the steps after c are the last ones of those.
  const at = (c: CopyBase) => {
    const k = after.length - c.plan.after.length - 1;
    return k >= 0 && isCopyStep(after[k]!) && JSON.stringify(after.slice(k + 1)) === JSON.stringify(c.plan.after) ? k : undefined;
  };
  const later = (c: CopyBase) => c.parent !== undefined && c.plan.copyStep > copy.plan.copyStep;
  const carried = new Map<CopyBase, number>();
  if (copy.parent) {
    for (const c of ["refused" in base.copy ? [] : [base.copy], base.starts].flat()) {
      const k = later(c) ? at(c) : undefined;
      if (k !== undefined) carried.set(c, k + 1);
    }
  }
  const needed = Math.max(0, ...carried.values());
  return {
    needed,
    carry(kept) {
      const one = (c: CopyBase): CopyBase | undefined => {
        if (!later(c)) return c;
        const n = carried.get(c);
        if (n === undefined || kept.length < needed) return undefined;
        return { ...c, parent: { ...c.parent!, id: copy.parent!.id, layers: [...(copy.parent!.layers ?? []), ...kept.slice(0, n)] } };
      };
      const final = "refused" in base.copy ? base.copy : (one(base.copy) ?? { refused: "the fast path last started from an earlier COPY, and kiln could not keep its own steps below this one" });
      return { copy: final, starts: base.starts.map(one).filter((c): c is CopyBase => c !== undefined) };
    },
  };
}
