// The git cache against git itself: after every checkout the directory is the commit's tree as
// `git archive` writes it (files, modes, symlinks, line endings a .gitattributes asks for), a
// checkout that did not finish is not trusted, and a commit the cache holds in a pack is built
// when its URL is gone. Real git repositories; no kilnd.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { KilnError } from "../../src/errors/kiln-error.js";
import { createGitCache, type GitExec } from "../../src/git/cache.js";
import { changedFiles } from "../../src/git/diff.js";
import { gitEnv } from "../../src/git/env.js";
import { parseGitUrl } from "../../src/git/url.js";
import { passThroughEnv } from "../../src/podman/podman.js";
import { run } from "../../src/process/run.js";
import { makeRepo, type Files, type TestRepo } from "../helpers/git-repo.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const git: GitExec = async (args) => (await run("git", args, { env: gitEnv(passThroughEnv(process.env)) })).result;
const diffIn = (cacheDir: string, project: string) => changedFiles(join(cacheDir, `${project}.git`), { env: gitEnv(passThroughEnv(process.env)) });

/** Every entry under dir: its type, the owner's execute bit, and its content or link target. */
function tree(dir: string, at = ""): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(join(dir, at)).sort()) {
    const rel = at ? `${at}/${name}` : name;
    const st = lstatSync(join(dir, rel));
    if (st.isDirectory()) Object.assign(out, tree(dir, rel));
    else if (st.isSymbolicLink()) out[rel] = `link ${readlinkSync(join(dir, rel))}`;
    else out[rel] = `file ${st.mode & 0o100 ? "x" : "-"} ${JSON.stringify(readFileSync(join(dir, rel), "latin1"))}`;
  }
  return out;
}

/** The commit's tree as git archive writes it (which applies the commit's .gitattributes). */
function archived(repo: TestRepo, commit: string, into: string): Record<string, string> {
  rmSync(into, { recursive: true, force: true });
  mkdirSync(into, { recursive: true });
  execFileSync("sh", ["-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", repo.dir, commit, into]);
  return tree(into);
}

describe("git cache", () => {
  let dir: string;
  before(() => {
    dir = tempDir("git-cache");
  });
  after(() => removeTree(dir));

  test("every checkout is the commit's tree as git archive writes it, a .gitattributes change included", async () => {
    const repo = makeRepo(join(dir, "src-a"), { "a.txt": "one\ntwo\n", "lib/b.txt": "b\n", "run.sh": "#!/bin/sh\n" });
    const cache = createGitCache(join(dir, "cache-a"), join(dir, "work-a"));
    const url = parseGitUrl(repo.url);
    const changes: Files[] = [
      { "a.txt": "one\ntwo\nthree\n", "lib/c.txt": "c\n" },
      { "lib/b.txt": null, "link.txt": { symlink: "a.txt" }, "run.sh": { content: "#!/bin/sh\n", mode: 0o755 } },
      // Only the attributes change: every text file is written anew with CRLF line endings.
      { ".gitattributes": "*.txt text eol=crlf\n" },
      { "lib/c.txt": "c, edited\n" },
      { ".gitattributes": null },
    ];
    const commits = [repo.head(), ...changes.map((c) => repo.commit(c))];
    for (const [i, commit] of commits.entries()) {
      await cache.ensureCommit("a", url, commit, git);
      const out = await cache.checkout("a", commit, git, diffIn(join(dir, "cache-a"), "a"));
      assert.deepEqual(tree(out.dir), archived(repo, commit, join(dir, `archive-a-${i}`)), `commit ${i}`);
      // What the fast path is handed: the files this commit wrote, deleted or changed the mode of, since the one checked out before.
      assert.deepEqual(out.changed, i === 0 ? undefined : { since: commits[i - 1], paths: Object.keys(changes[i - 1]!).sort() }, `commit ${i}'s changes`);
    }
    assert.match(tree(join(dir, "work-a", "a"))["a.txt"] ?? "", /^file - "one\\ntwo\\nthree\\n"$/, "the last checkout has LF again");
  });

  test("a checkout gives the commit's committer time (kiln's created label), not its author's or now", async () => {
    const repo = makeRepo(join(dir, "src-time"), { "a.txt": "a\n" });
    writeFileSync(join(repo.dir, "a.txt"), "b\n");
    execFileSync("git", ["-C", repo.dir, "-c", "user.name=t", "-c", "user.email=t@kiln.invalid", "commit", "-qam", "dated"], {
      env: { ...process.env, GIT_AUTHOR_DATE: "1999-12-31T23:59:59+0000", GIT_COMMITTER_DATE: "2001-02-03T04:05:06+0200" },
    });
    const cache = createGitCache(join(dir, "cache-time"), join(dir, "work-time"));
    await cache.ensureCommit("t", parseGitUrl(repo.url), repo.head(), git);
    const out = await cache.checkout("t", repo.head(), git, diffIn(join(dir, "cache-time"), "t"));
    assert.equal(out.committed.toISOString(), "2001-02-03T02:05:06.000Z");
    assert.equal(out.committed.toISOString(), repo.committed(repo.head()));
    // Read from the loose object above; from git once the commit is in a pack.
    const cacheRepo = join(dir, "cache-time", "t.git");
    assert.ok(readdirSync(join(cacheRepo, "objects")).some((d) => /^[0-9a-f]{2}$/.test(d)), "the fetch left loose objects");
    execFileSync("git", ["--git-dir", cacheRepo, "repack", "-a", "-d", "-q"]);
    execFileSync("git", ["--git-dir", cacheRepo, "prune-packed"]);
    assert.ok(!readdirSync(join(cacheRepo, "objects")).some((d) => /^[0-9a-f]{2}$/.test(d)), "every object packed");
    const packed = await cache.checkout("t", repo.head(), git, diffIn(join(dir, "cache-time"), "t"));
    assert.equal(packed.committed.toISOString(), "2001-02-03T02:05:06.000Z");
  });

  test("a new cache repository is fetched into at once and has git's automatic gc off", async () => {
    const repo = makeRepo(join(dir, "src-d"), { "a.txt": "a\n" });
    const cache = createGitCache(join(dir, "cache-d"), join(dir, "work-d"));
    const ran: string[][] = [];
    const logged: GitExec = (args, quiet) => (ran.push(args), git(args, quiet));
    assert.deepEqual(await cache.ensureCommit("d", parseGitUrl(repo.url), repo.head(), logged), { fetched: true });
    assert.deepEqual(
      ran.map((args) => args.find((a) => ["init", "fetch", "cat-file", "config"].includes(a))),
      ["init", "fetch"],
    );
    assert.equal(execFileSync("git", ["--git-dir", join(dir, "cache-d", "d.git"), "config", "--get", "gc.auto"], { encoding: "utf8" }).trim(), "0");
  });

  test("a checkout that did not finish is written afresh (read-tree would leave the files it added)", async () => {
    const repo = makeRepo(join(dir, "src-b"), { "a.txt": "a\n", "b.txt": "b\n" });
    const cache = createGitCache(join(dir, "cache-b"), join(dir, "work-b"));
    const url = parseGitUrl(repo.url);
    const first = repo.head();
    await cache.ensureCommit("b", url, first, git);
    const out = (await cache.checkout("b", first, git, diffIn(join(dir, "cache-b"), "b"))).dir;
    // A checkout of another commit was killed after writing its new file and b.txt, before the
    // index: the marker says a checkout was under way. read-tree --reset rewrites a file whose
    // stat the index does not match, but leaves a file the index never had.
    writeFileSync(join(out, "new.txt"), "from a checkout that never finished\n");
    writeFileSync(join(out, "b.txt"), "b, from a checkout that never finished\n");
    writeFileSync(join(dir, "cache-b", "b.git", "kiln-checkout"), "");
    const second = repo.commit({ "a.txt": "a, edited\n" });
    await cache.ensureCommit("b", url, second, git);
    await cache.checkout("b", second, git, diffIn(join(dir, "cache-b"), "b"));
    assert.deepEqual(tree(out), archived(repo, second, join(dir, "archive-b")));
  });

  test("a commit the cache holds in a pack is found when its URL is gone; a new one is not_found", async () => {
    const repo = makeRepo(join(dir, "src-c"), { "a.txt": "a\n" });
    const cache = createGitCache(join(dir, "cache-c"), join(dir, "work-c"));
    const url = parseGitUrl(repo.url);
    const first = repo.head();
    const second = repo.commit({ "a.txt": "a, edited\n" });
    assert.deepEqual(await cache.ensureCommit("c", url, first, git), { fetched: true });
    // A loose commit of the same URL: in the cache, without a fetch.
    assert.deepEqual(await cache.ensureCommit("c", url, first, git), { fetched: false });
    assert.deepEqual(await cache.ensureCommit("c", url, second, git), { fetched: true });
    execFileSync("git", ["--git-dir", join(dir, "cache-c", "c.git"), "repack", "-a", "-d", "-q"]);
    execFileSync("git", ["--git-dir", join(dir, "cache-c", "c.git"), "prune-packed"]);
    const third = repo.commit({ "a.txt": "a, third\n" });
    removeTree(repo.dir);
    assert.deepEqual(await cache.ensureCommit("c", url, first, git), { fetched: false });
    const out = (await cache.checkout("c", first, git, diffIn(join(dir, "cache-c"), "c"))).dir;
    assert.equal(readFileSync(join(out, "a.txt"), "utf8"), "a\n");
    await assert.rejects(cache.ensureCommit("c", url, third, git), (e: unknown) => e instanceof KilnError && e.code === "not_found");
  });
});
