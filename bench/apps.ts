// The benchmark's apps: git repositories made from examples/, and the commits each scenario
// needs (a one-line source change; a dependency the cache has never seen).
import { execFileSync } from "node:child_process";
import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { BenchApp } from "./engines/engine.js";

const DEP_VERSIONS = ["7.0.0", "6.0.0", "5.0.0", "4.0.0", "3.0.0", "2.1.0", "2.0.2", "1.1.2", "1.1.0", "0.1.1"];

const git = (repo: string, ...args: string[]) => execFileSync("git", ["-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@kiln.invalid", ...args], { encoding: "utf8" }).trim();

export interface AppRepo extends BenchApp {
  dir: string;
  /** Commits a one-line source change; returns the commit. */
  change(): string;
  /** Commits package.json and lockfile with one more dependency (a new version every time). */
  addDependency(i: number): string;
  head(): string;
}

export function makeAppRepo(root: string, work: string, example: string, sourceFile: string, source: (n: number) => string): AppRepo {
  const dir = join(work, "repos", example);
  rmSync(dir, { recursive: true, force: true });
  cpSync(join(root, "examples", example), dir, { recursive: true });
  git(dir, "init", "-q", "-b", "main");
  git(dir, "add", "-A");
  git(dir, "commit", "-qm", "init");
  let n = 0;
  const depDir = join(work, "dep-variant", example);
  return {
    name: example,
    repo: `file://${dir}`,
    dir,
    head: () => git(dir, "rev-parse", "HEAD"),
    change() {
      writeFileSync(join(dir, sourceFile), source(++n));
      git(dir, "commit", "-qam", `change ${n}`);
      return git(dir, "rev-parse", "HEAD");
    },
    addDependency(i) {
      // The lockfile is made here, outside the timing, from the example's own package.json.
      rmSync(depDir, { recursive: true, force: true });
      cpSync(join(root, "examples", example), depDir, { recursive: true });
      const version = DEP_VERSIONS[i % DEP_VERSIONS.length]!;
      execFileSync("npm", ["install", "--package-lock-only", "--no-audit", "--no-fund", "--loglevel=error", `is-number@${version}`], { cwd: depDir, stdio: "ignore" });
      writeFileSync(join(dir, "package.json"), readFileSync(join(depDir, "package.json")));
      writeFileSync(join(dir, "package-lock.json"), readFileSync(join(depDir, "package-lock.json")));
      git(dir, "commit", "-qam", `deps ${i}`);
      return git(dir, "rev-parse", "HEAD");
    },
  };
}

export const helloNode = (root: string, work: string) =>
  makeAppRepo(root, work, "hello-node", "src/greeting.js", (n) => `// bench change ${n}\n"use strict";\nexports.greeting = (name) => \`hello ${n}, \${name}\`;\n`);

export const nodeApi = (root: string, work: string) =>
  makeAppRepo(root, work, "node-api", "src/version.js", (n) => `// Changed by kiln's benchmark on every warm build.\n"use strict";\nexports.version = "${n + 1}";\n`);
