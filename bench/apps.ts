// The benchmark's apps: git repositories made from examples/, and the commits each scenario
// needs (a one-line source change; a dependency the cache has never seen).
import { execFile, execFileSync } from "node:child_process";
import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import type { BenchApp } from "./engines/engine.js";

const DEP_VERSIONS = ["7.0.0", "6.0.0", "5.0.0", "4.0.0", "3.0.0", "2.1.0", "2.0.2", "1.1.2", "1.1.0", "0.1.1"];

const run = promisify(execFile);
const git = (repo: string, ...args: string[]) => execFileSync("git", ["-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@kiln.invalid", ...args], { encoding: "utf8" }).trim();

export interface AppRepo extends BenchApp {
  dir: string;
  /** Commits a one-line source change; returns the commit. */
  change(): string;
  /** Makes the package.json and lockfile of dependency change i ahead of time (untimed work). */
  prepareDependency(i: number): Promise<void>;
  /** Commits package.json and lockfile with one more dependency (a new version every time). */
  addDependency(i: number): Promise<string>;
  head(): string;
}

/** overlay: another example whose files go over this one's (the same app, another Containerfile); the app takes its name. */
export function makeAppRepo(root: string, work: string, example: string, sourceFile: string, source: (n: number) => string, overlay?: string): AppRepo {
  const name = overlay ?? example;
  const dir = join(work, "repos", name);
  rmSync(dir, { recursive: true, force: true });
  cpSync(join(root, "examples", example), dir, { recursive: true });
  if (overlay) cpSync(join(root, "examples", overlay), dir, { recursive: true });
  git(dir, "init", "-q", "-b", "main");
  git(dir, "add", "-A");
  git(dir, "commit", "-qm", "init");
  let n = 0;
  const depRoot = join(work, "dep-variant", name);
  const variants = new Map<number, Promise<{ pkg: Buffer; lock: Buffer }>>();
  const app: AppRepo = {
    name,
    repo: `file://${dir}`,
    dir,
    head: () => git(dir, "rev-parse", "HEAD"),
    change() {
      writeFileSync(join(dir, sourceFile), source(++n));
      git(dir, "commit", "-qam", `change ${n}`);
      return git(dir, "rev-parse", "HEAD");
    },
    prepareDependency(i) {
      let v = variants.get(i);
      if (!v) {
        // From the example's own package.json, in a directory of its own, outside any timing.
        const variantDir = join(depRoot, String(i));
        rmSync(variantDir, { recursive: true, force: true });
        cpSync(join(root, "examples", example), variantDir, { recursive: true });
        if (overlay) cpSync(join(root, "examples", overlay), variantDir, { recursive: true });
        const version = DEP_VERSIONS[i % DEP_VERSIONS.length]!;
        v = run("npm", ["install", "--package-lock-only", "--no-audit", "--no-fund", "--loglevel=error", `is-number@${version}`], { cwd: variantDir }).then(() => ({
          pkg: readFileSync(join(variantDir, "package.json")),
          lock: readFileSync(join(variantDir, "package-lock.json")),
        }));
        variants.set(i, v);
      }
      return v.then(() => undefined);
    },
    async addDependency(i) {
      await app.prepareDependency(i);
      const { pkg, lock } = await variants.get(i)!;
      writeFileSync(join(dir, "package.json"), pkg);
      writeFileSync(join(dir, "package-lock.json"), lock);
      git(dir, "commit", "-qam", `deps ${i}`);
      return git(dir, "rev-parse", "HEAD");
    },
  };
  return app;
}

export const helloNode = (root: string, work: string) =>
  makeAppRepo(root, work, "hello-node", "src/greeting.js", (n) => `// bench change ${n}\n"use strict";\nexports.greeting = (name) => \`hello ${n}, \${name}\`;\n`);

export const nodeApi = (root: string, work: string) =>
  makeAppRepo(root, work, "node-api", "src/version.js", (n) => `// Changed by kiln's benchmark on every warm build.\n"use strict";\nexports.version = "${n + 1}";\n`);

/** A TypeScript service whose sources are compiled in the image: a RUN (esbuild) after the COPY of the sources. */
export const tsService = (root: string, work: string) =>
  makeAppRepo(root, work, "ts-service", "src/greeting.ts", (n) => `// bench change ${n}\nexport const greeting = (name: string): string => \`hello ${n}, \${name}\`;\n`);

/** ts-service as three stages: dependencies, a build stage that compiles with tsc, a runtime stage. */
export const tsMultiStage = (root: string, work: string) =>
  makeAppRepo(root, work, "ts-service", "src/greeting.ts", (n) => `// bench change ${n}\nexport const greeting = (name: string): string => \`hello ${n}, \${name}\`;\n`, "ts-multi-stage");

/** The multi-stage app: hello-node with examples/multi-stage's Containerfile (dependencies in a stage of their own, sources last). */
export const multiStage = (root: string, work: string) =>
  makeAppRepo(root, work, "hello-node", "src/greeting.js", (n) => `// bench change ${n}\n"use strict";\nexports.greeting = (name) => \`hello ${n}, \${name}\`;\n`, "multi-stage");
