// The order of a branch's pushes, from the push events' own "before" and "after": GitHub does
// not promise to deliver webhooks in order, and the newest commit of a branch must be what is
// deployed last. A push whose commit is an ancestor of the branch's newest known head (reached
// by walking back through the "before" links seen) is older and must not supersede it. When the
// links have a gap (a delivery not arrived yet, a force push), the verdict names the head it
// could not be ordered against, and git decides (the project's worker asks kilnd).

const MAX_LINKS = 10_000;
const MAX_WALK = 1_000;

/** unsureOf: the branch's head, which this push's before links do not reach. */
export type PushVerdict = { stale: false; unsureOf?: string } | { stale: true; newer: string };

export class PushOrder {
  /** project → commit → the commit its push replaced */
  private readonly links = new Map<string, Map<string, string>>();
  /** project → the newest commit known */
  private readonly heads = new Map<string, string>();
  /** project → commit → the commit whose push replaced it (its "before") */
  private readonly replacedBy = new Map<string, Map<string, string>>();

  /** Records a push of the project's branch and says whether it is older than one seen. */
  observe(project: string, commit: string, before: string): PushVerdict {
    let links = this.links.get(project);
    if (!links) this.links.set(project, (links = new Map()));
    let replaced = this.replacedBy.get(project);
    if (!replaced) this.replacedBy.set(project, (replaced = new Map()));
    if (before && before !== commit) {
      links.delete(commit);
      links.set(commit, before);
      if (links.size > MAX_LINKS) links.delete(links.keys().next().value!);
      replaced.set(before, commit);
      if (replaced.size > MAX_LINKS) replaced.delete(replaced.keys().next().value!);
    }
    // A push delivered earlier named this commit as the one it replaced: this one is older,
    // even when the pushes between are not known (yet).
    const later = replaced.get(commit);
    if (later && later !== commit && this.heads.get(project) !== commit) return { stale: true, newer: later };
    const head = this.heads.get(project);
    if (head && head !== commit) {
      let c: string | undefined = head;
      for (let i = 0; i < MAX_WALK && c; i++) {
        c = links.get(c);
        if (c === commit) return { stale: true, newer: head };
      }
    }
    if (head && head !== commit) {
      // Newer only when this push's own before links reach the head; until git says so (advance),
      // the head stays.
      let c: string | undefined = before;
      for (let i = 0; i < MAX_WALK && c && c !== head; i++) c = links.get(c);
      if (c !== head) return { stale: false, unsureOf: head };
    }
    this.heads.set(project, commit);
    return { stale: false };
  }

  /** git said that a push observed unordered is newer than the head: it is the head now. */
  advance(project: string, commit: string): void {
    this.heads.set(project, commit);
  }
}
