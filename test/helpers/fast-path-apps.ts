// The fast path's differential tests: their world and the example apps' harness. Shared by
// fast-path.test.ts (changes of the final COPY), fast-path-starts.test.ts (builds that start below
// it) and fast-path-differential.test.ts (generated cases). Each file has a world of its own: a
// registry, the busybox base, a kilnd with the fast path (the bundle kilnd ships as) and one
// without (src/ under tsx). Every commit is built on both, and the two pushed images must be the
// same (helpers/differential.ts).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { pushBusyboxBase } from "./base-image.js";
import { createDifferential } from "./differential.js";
import { makeRepo, type Files, type TestRepo } from "./git-repo.js";
import { startKilnd, type TestKilnd } from "./kilnd.js";
import { viewImage } from "./image-fs.js";
import { logText } from "./logs.js";
import { startRegistry, type TestRegistry } from "./registry.js";
import { removeTree, tempDir } from "./tmp.js";

export interface App {
  name: string;
  files: (base: string) => Files;
  /** The build args and the secrets of every build of the app. */
  buildArgs?: Record<string, string>;
  secrets?: Record<string, string>;
  /** What the first (full) build's log says the next build can start from; the default: a source change starts from this one. */
  recorded?: RegExp;
  /** Each change, and whether the fast path may take it. */
  changes: { kind: string; files: Files | ((base: string) => Files); fast: boolean; log?: RegExp; notLog?: RegExp; contents?: Record<string, string> }[];
}

export interface FastPathWorld {
  dir: string;
  reg: TestRegistry;
  /** The busybox base's reference in the registry. */
  base: string;
  fast: TestKilnd;
  full: TestKilnd;
}

/** A step that writes /etc/passwd and /etc/group (the test base has none): user app is 1001, its group 1002. */
export const ACCOUNTS = `RUN mkdir -p /etc && printf 'root:x:0:0::/root:/bin/sh\\napp:x:1001:1002::/app:/bin/sh\\n' > /etc/passwd && printf 'root:x:0:\\napp:x:1002:\\n' > /etc/group`;
export const OWN_STEPS = /fast path: mounted the image below the COPY \([0-9a-f]{12}, with 2 layers of kiln's own steps on it\)/;
export const STARTED_EARLIER = /fast path: started from step \d+, the first COPY that reads a changed file/;
export const FIRST_BUILT = /first build: buildah built the \d+ steps? before the first COPY; kiln made/;
const SOURCE_CHANGE_STARTS = /fast path: the next build of a source change can start from this one(;|$)/m;

const sha256 = (text: string) => `sha256:${createHash("sha256").update(text).digest("hex")}`;

/**
 * Registers the world's set-up and tear-down in the calling describe, and returns it (its
 * fields are filled in by the time the tests run).
 */
export function fastPathWorld(name: string): FastPathWorld {
  const w = {} as FastPathWorld;
  before(async () => {
    w.dir = tempDir(name);
    w.reg = await startRegistry(join(w.dir, "registry"));
    w.base = pushBusyboxBase(w.reg.host);
    [w.fast, w.full] = await Promise.all([
      startKilnd({ data: join(w.dir, "fast"), registry: w.reg.host, bundle: true }),
      startKilnd({ data: join(w.dir, "full"), registry: w.reg.host, args: ["--fast-path", "off"] }),
    ]);
  });
  after(async () => {
    await Promise.all([w.fast?.stop(), w.full?.stop()]);
    await w.reg?.stop();
    if (w.dir) removeTree(w.dir);
  });
  return w;
}

/** One describe per app: its first commit (a full build that becomes the base), then each change, built both ways. */
export function describeApps(w: FastPathWorld, apps: App[]): void {
  /** Builds the commit on both kilnds; when both succeed, their images must be the same. */
  const buildBoth = async (repo: TestRepo, app: App, commit: string) => {
    const r = await createDifferential(w.fast, w.full, w.reg)(repo, app.name, commit, { ...(app.buildArgs ? { buildArgs: app.buildArgs } : {}), ...(app.secrets ? { secrets: app.secrets } : {}) });
    assert.deepEqual(r.differences, []);
    return r;
  };
  for (const app of apps) {
    describe(app.name, () => {
      let repo: TestRepo;
      test("the first build becomes the base (kiln's first build on a base new to storage, else a full one)", async () => {
        repo = makeRepo(join(w.dir, `repo-${app.name}`), app.files(w.base));
        const { f } = await buildBoth(repo, app, repo.head());
        assert.equal(f.state, BuildState.SUCCEEDED, f.error);
        const log = await logText(w.fast, f.id);
        assert.match(log, /fast path: not taken: no full build of this project/);
        // The world's first build finds its base new to storage: kiln's first build runs when the Containerfile allows it.
        assert.equal(f.fastPath, FIRST_BUILT.test(log), log);
        // Recorded after the build's result, in kilnd's log.
        assert.match(await w.fast.fastPathRecord(f.id), app.recorded ?? SOURCE_CHANGE_STARTS);
        assert.doesNotMatch(await logText(w.fast, f.id), /fast path: the next build/, "the build's log closed before the record");
      });
      for (const change of app.changes) {
        test(`${change.kind}: ${change.fast ? "fast, and equal to the full build" : "the full build runs"}`, async () => {
          const files = typeof change.files === "function" ? change.files(w.base) : change.files;
          const before = repo.head();
          const commit = repo.commit(files, change.kind);
          const { f } = await buildBoth(repo, app, commit);
          assert.equal(f.fastPath, change.fast, await logText(w.fast, f.id));
          if (change.fast) {
            // The change as the fast path took it: git's list from the checkout, which held the last build's commit.
            const paths = Object.keys(files).sort();
            const line = `fast path: ${paths.length} file${paths.length === 1 ? "" : "s"} changed since ${before.slice(0, 12)} (the checkout's list): ${paths.slice(0, 5).join(", ")}`;
            assert.ok((await logText(w.fast, f.id)).includes(line), `the log has no line ${JSON.stringify(line)}`);
          }
          if (!change.fast) assert.match(await logText(w.fast, f.id), /fast path: not taken: /);
          if (change.log) assert.match(await logText(w.fast, f.id), change.log);
          if (change.notLog) assert.doesNotMatch(await logText(w.fast, f.id), change.notLog);
          if (change.contents) {
            // What the image's files hold (the full build's and so the fast one's): the test's own expectation of buildah.
            const { files } = await viewImage(w.reg.host, `full/${app.name}`, commit);
            for (const [path, text] of Object.entries(change.contents)) assert.equal(files.get(path)?.digest, sha256(text), `${path} does not hold ${JSON.stringify(text)}`);
          }
        });
      }
    });
  }
}
