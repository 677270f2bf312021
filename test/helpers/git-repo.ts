// Real git repositories for tests, made in a temp dir from a map of files.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

export type Files = Record<string, string | { symlink: string } | { content: string; mode: number } | null>;

export interface TestRepo {
  dir: string;
  url: string;
  /** Writes (or, with null, deletes) files and commits them; returns the new commit SHA. */
  commit(files: Files, message?: string): string;
  head(): string;
  /** The commit's committer time, as kiln writes it in the created label (ISO 8601, UTC). */
  committed(sha: string): string;
}

const git = (dir: string, ...args: string[]) =>
  execFileSync("git", ["-C", dir, "-c", "user.name=kiln-test", "-c", "user.email=test@kiln.invalid", ...args], { encoding: "utf8" }).trim();

export function makeRepo(dir: string, files: Files): TestRepo {
  mkdirSync(dir, { recursive: true });
  git(dir, "init", "-q", "-b", "main");
  const repo: TestRepo = {
    dir,
    url: `file://${dir}`,
    commit(changes, message = "change") {
      for (const [path, f] of Object.entries(changes)) {
        const p = join(dir, path);
        if (f === null) {
          rmSync(p, { force: true, recursive: true });
          continue;
        }
        mkdirSync(dirname(p), { recursive: true });
        rmSync(p, { force: true });
        if (typeof f === "string") writeFileSync(p, f);
        else if ("symlink" in f) symlinkSync(f.symlink, p);
        else {
          writeFileSync(p, f.content);
          chmodSync(p, f.mode);
        }
      }
      git(dir, "add", "-A");
      git(dir, "commit", "-q", "--allow-empty", "-m", message);
      return repo.head();
    },
    head: () => git(dir, "rev-parse", "HEAD"),
    committed: (sha) => new Date(Number(git(dir, "show", "--no-patch", "--format=%ct", sha)) * 1000).toISOString(),
  };
  repo.commit(files, "init");
  return repo;
}
