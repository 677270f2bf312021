// The per-project git cache on the volume: a bare repository fetched incrementally (only the
// requested commit and what it needs), and the commit's tree materialised as the build context.
import { access, appendFile, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join, posix } from "node:path";
import { inflateSync } from "node:zlib";
import { KilnError } from "../errors/kiln-error.js";
import { errorSummary } from "../process/exec.js";
import type { RunResult } from "../process/run.js";
import { createKeyedLock } from "../util/keyed-lock.js";
import type { ChangedFiles } from "./diff.js";
import type { GitUrl } from "./url.js";

/** Runs git with the given arguments under the caller's logging (none when quiet) and cancellation. */
export type GitExec = (args: string[], quiet?: boolean) => Promise<RunResult>;

/** How a head commit stands to a base commit (CompareCommits). */
export type CommitRelation = "identical" | "ahead" | "behind" | "diverged";

export interface Checkout {
  dir: string;
  /** The commit's committer time: kiln's `created` label (podman/kiln-labels.ts). */
  committed: Date;
  /** The files that differ from the commit the checkout held before (repository paths), when git compared the two. */
  changed?: { since: string; paths: string[] };
}

export interface FetchOutcome {
  /** False when the commit was in the cache already. */
  fetched: boolean;
}

const STALE_LOCKS = ["index.lock", "shallow.lock", "packed-refs.lock", "HEAD.lock", "config.lock", "refs/kiln/last.lock"];
const LAST_REF = "refs/kiln/last";
/** In the bare repository: the URL (credentials taken out) the cache was last fetched from. */
const SOURCE_FILE = "kiln-source";
/** In the bare repository: the commit the checkout holds; empty while a checkout is being written. */
const CHECKOUT_FILE = "kiln-checkout";
const FULL_SHA = /^[0-9a-f]{40}$/;
/** git fetch starts `git maintenance run --auto` when it is done: kilnd owns maintenance. */
const NO_MAINTENANCE = ["-c", "maintenance.auto=false"];

export function createGitCache(root: string, workRoot: string) {
  const repoOf = (project: string) => join(root, `${project}.git`);
  // The checkout's index is the bare repository's own (GIT_DIR/index): one repository per
  // project, one checkout. (An earlier `-c core.indexfile=` named no real setting: git wrote the
  // default index while kiln looked for another file, and every build checked out afresh.)
  const indexOf = (project: string) => join(root, `${project}.git`, "index");
  const checkoutOf = (project: string) => join(workRoot, project);
  // One git at a time in a project's repository (a build's fetch and checkout, a comparison):
  // a lock file found when one starts is then stale, and is removed.
  const withRepo = createKeyedLock();

  /** The project's bare repository, made when it is not there yet (created: it holds no commit). */
  async function ensureRepo(project: string, git: GitExec): Promise<{ repo: string; created: boolean }> {
    const repo = repoOf(project);
    let created = false;
    try {
      await access(join(repo, "HEAD"));
    } catch {
      await mkdir(root, { recursive: true });
      const r = await git(["init", "--bare", "--quiet", "--", repo]);
      if (r.exitCode !== 0) throw new KilnError("internal", `git init failed: ${r.stderrTail.at(-1) ?? ""}`);
      // kilnd owns maintenance; an automatic gc must never run in the middle of a build. Written
      // into the new repository's config as `git config gc.auto 0` would (a process fewer on a first build).
      await appendFile(join(repo, "config"), "[gc]\n\tauto = 0\n");
      created = true;
    }
    // A cancelled or killed git leaves its lock files: only one git runs per project, so any
    // lock found here is stale.
    await Promise.all(STALE_LOCKS.map((l) => rm(join(repo, l), { force: true })));
    return { repo, created };
  }

  /**
   * The commit object, when the cache holds it loose (where a build's small fetch leaves it):
   * read from its file, without starting git ("commit <size>\0" and the commit's text).
   * Undefined says nothing: it may be in a pack.
   */
  async function looseCommit(repo: string, commit: string): Promise<Buffer | undefined> {
    if (!FULL_SHA.test(commit)) return undefined;
    const file = await readFile(join(repo, "objects", commit.slice(0, 2), commit.slice(2))).catch(() => undefined);
    if (!file) return undefined;
    try {
      const object = inflateSync(file);
      return object.subarray(0, 7).toString("latin1") === "commit " ? object : undefined;
    } catch {
      return undefined;
    }
  }

  const isLooseCommit = async (repo: string, commit: string) => (await looseCommit(repo, commit)) !== undefined;

  async function hasCommit(repo: string, commit: string, git: GitExec): Promise<boolean> {
    if (await isLooseCommit(repo, commit)) return true;
    // A probe: its answer (or "not a valid object") is no line for the build's log.
    const r = await git(["--git-dir", repo, "cat-file", "-e", `${commit}^{commit}`], true);
    return r.exitCode === 0;
  }

  async function ensureCommit(project: string, url: GitUrl, commit: string, git: GitExec): Promise<FetchOutcome> {
    return withRepo(project, () => ensureCommitHeld(project, url, commit, git));
  }

  async function ensureCommitHeld(project: string, url: GitUrl, commit: string, git: GitExec): Promise<FetchOutcome> {
    const { repo, created } = await ensureRepo(project, git);
    // The cache answers for the URL it was fetched from. A request naming another URL fetches
    // from it (a quick negotiation when the objects are here): that URL must have the commit,
    // or the image would be labelled with a source it never came from.
    const sourceFile = join(repo, SOURCE_FILE);
    const source = await readFile(sourceFile, "utf8").catch(() => "");
    if (source === url.redacted) {
      if (await isLooseCommit(repo, commit)) return { fetched: false };
      // Most likely a new commit: the fetch is the probe (no git started only to say "not here").
      // One the cache holds in a pack is still built when the URL cannot give it.
      try {
        return await fetchCommit(repo, url, commit, git);
      } catch (e) {
        if (await hasCommit(repo, commit, git)) return { fetched: false };
        throw e;
      }
    }
    let outcome: FetchOutcome;
    if (created || !(await hasCommit(repo, commit, git))) outcome = await fetchCommit(repo, url, commit, git);
    else {
      // git does not ask the server for a commit it has: the URL's branches are fetched instead.
      await fetchBranches(repo, url, git);
      if (!(await onFetchedBranch(repo, commit, git))) throw notFound(commit, url);
      outcome = { fetched: true };
    }
    await writeFile(sourceFile, url.redacted);
    return outcome;
  }

  async function fetchBranches(repo: string, url: GitUrl, git: GitExec): Promise<void> {
    const all = await git([...NO_MAINTENANCE, "--git-dir", repo, "fetch", "--prune", "--no-tags", "--no-write-fetch-head", "--", url.raw, "+refs/heads/*:refs/kiln/heads/*"]);
    if (all.exitCode !== 0) {
      throwIfUnreachable(all, url);
      throw new KilnError("failed_precondition", `git fetch from ${url.redacted} failed: ${errorSummary(all)}`);
    }
  }

  async function onFetchedBranch(repo: string, commit: string, git: GitExec): Promise<boolean> {
    const r = await git(["--git-dir", repo, "for-each-ref", "--count=1", "--contains", commit, "refs/kiln/heads/"], true);
    return r.exitCode === 0 && r.stdout.trim() !== "";
  }

  async function fetchCommit(repo: string, url: GitUrl, commit: string, git: GitExec): Promise<FetchOutcome> {
    if (url.localPath !== undefined) {
      try {
        await access(url.localPath);
      } catch {
        throw new KilnError("not_found", `source.git.url: ${url.redacted} does not exist`);
      }
    }
    // Ask for the one commit; servers that refuse unadvertised objects get a fetch of their branches.
    const byId = await git([...NO_MAINTENANCE, "--git-dir", repo, "fetch", "--no-tags", "--no-write-fetch-head", "--", url.raw, `+${commit}:${LAST_REF}`]);
    if (byId.exitCode === 0) return { fetched: true };
    throwIfUnreachable(byId, url);
    await fetchBranches(repo, url, git);
    if (!(await hasCommit(repo, commit, git))) throw notFound(commit, url);
    await git(["--git-dir", repo, "update-ref", LAST_REF, commit]);
    return { fetched: true };
  }

  /**
   * Puts the commit's tree in the project's checkout directory. Incremental: git rewrites only
   * the files that differ from the last checkout and removes the ones that are gone.
   */
  function checkout(project: string, commit: string, git: GitExec, diff: ChangedFiles): Promise<Checkout> {
    return withRepo(project, () => checkoutHeld(project, commit, git, diff));
  }

  async function checkoutHeld(project: string, commit: string, git: GitExec, diff: ChangedFiles): Promise<Checkout> {
    const repo = repoOf(project);
    const dir = checkoutOf(project);
    const index = indexOf(project);
    const heldFile = join(repo, CHECKOUT_FILE);
    const readTree = () => git(["--git-dir", repo, "--work-tree", dir, "read-tree", "--reset", "-u", commit]);
    // Read while the tree is written (git reads the commit object; the index is not touched).
    const committed = commitTime(repo, commit, git);
    committed.catch(() => {});
    const afresh = async () => {
      await rm(index, { force: true });
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      return readTree();
    };
    // What the checkout holds, if the last checkout finished. A cancelled or killed one may have
    // written files and not the index: read-tree rewrites the ones the index has, but leaves the
    // ones it added, which would be in this build's context.
    const held = await readFile(heldFile, "utf8").catch(() => "");
    const known = FULL_SHA.test(held) && (await access(index).then(() => true, () => false));
    await writeFile(heldFile, "");
    let r: RunResult;
    let changed: Checkout["changed"];
    if (!known) r = await afresh();
    else {
      await mkdir(dir, { recursive: true });
      // read-tree rewrites only the files whose blobs changed; a changed .gitattributes (line
      // endings, filters) changes how unchanged blobs are written out: then every file is
      // written anew. git compares the two commits while read-tree runs (it reads no index).
      const [paths, tree] = await Promise.all([held === commit ? [] : diff(held, commit).catch(() => undefined), readTree()]);
      if (paths) changed = { since: held, paths };
      // A failed read-tree is a torn index or directory (a crash mid-checkout): start over.
      r = tree.exitCode !== 0 || !paths || paths.some((p) => posix.basename(p) === ".gitattributes") ? await afresh() : tree;
    }
    if (r.exitCode !== 0) throw new KilnError("internal", `checkout of ${commit} failed: ${errorSummary(r)}`);
    await writeFile(heldFile, commit);
    return { dir, committed: await committed, ...(changed ? { changed } : {}) };
  }

  /**
   * The committer line's time: from the loose object when there is one (no process on a warm
   * build), else from `git cat-file` (plumbing: no user config such as log.showSignature applies).
   */
  async function commitTime(repo: string, commit: string, git: GitExec): Promise<Date> {
    const loose = await looseCommit(repo, commit);
    let text: string;
    if (loose) text = loose.subarray(loose.indexOf(0) + 1).toString("utf8");
    else {
      const r = await git(["--git-dir", repo, "cat-file", "commit", commit], true);
      if (r.exitCode !== 0) throw new KilnError("internal", `cannot read the time of commit ${commit}: ${errorSummary(r)}`);
      text = r.stdout;
    }
    const m = /^committer .* (-?\d+) [+-]\d{4}$/m.exec(text.split("\n\n", 1)[0] ?? "");
    if (!m) throw new KilnError("internal", `cannot read the time of commit ${commit}: no committer line`);
    return new Date(Number(m[1]) * 1000);
  }

  /** Fetches both commits (as a build would) and asks git which one is the other's ancestor. */
  function compare(project: string, url: GitUrl, base: string, head: string, git: GitExec): Promise<CommitRelation> {
    return withRepo(project, async () => {
      await ensureCommitHeld(project, url, base, git);
      await ensureCommitHeld(project, url, head, git);
      if (base === head) return "identical";
      const repo = repoOf(project);
      const isAncestor = async (a: string, b: string) => {
        const r = await git(["--git-dir", repo, "merge-base", "--is-ancestor", a, b], true);
        // 0: it is; 1: it is not; anything else is git failing, not an answer.
        if (r.exitCode === 0 || r.exitCode === 1) return r.exitCode === 0;
        throw new KilnError("internal", `git merge-base failed: ${errorSummary(r)}`);
      };
      if (await isAncestor(base, head)) return "ahead";
      if (await isAncestor(head, base)) return "behind";
      return "diverged";
    });
  }

  return { repoOf, checkoutOf, ensureCommit, checkout, compare };
}

export type GitCache = ReturnType<typeof createGitCache>;

const notFound = (commit: string, url: GitUrl) => new KilnError("not_found", `source.git.commit: commit ${commit} was not found in ${url.redacted}`);

function throwIfUnreachable(r: RunResult, url: GitUrl): void {
  const err = r.stderrTail.join("\n");
  if (/does not appear to be a git repository|repository '.*' not found|Repository not found|not a git repository|No such file or directory/i.test(err)) {
    throw new KilnError("not_found", `source.git.url: no git repository at ${url.redacted}`);
  }
  if (/Could not resolve host|Connection refused|Connection timed out|Network is unreachable|Operation timed out|unable to access/i.test(err)) {
    throw new KilnError("unavailable", `source.git.url: cannot reach ${url.redacted}: ${errorSummary(r)}`);
  }
  if (/Authentication failed|Permission denied|could not read Username/i.test(err)) {
    throw new KilnError("failed_precondition", `source.git.url: access to ${url.redacted} was denied`);
  }
}
