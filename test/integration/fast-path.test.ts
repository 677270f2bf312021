// kiln's fast path against the truth: every commit is built twice, by a kilnd with the fast path
// and by one without (a full podman build), and the two pushed images must have the same
// filesystem and config. Several apps, every kind of change (edit, add, delete, rename, mode,
// symlink, ignored file, file outside the COPY), and the changes the fast path must refuse.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type Files, type TestRepo } from "../helpers/git-repo.js";
import { createDifferential } from "../helpers/differential.js";
import { fsDifferences, viewImage } from "../helpers/image-fs.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { containerMountsUnder, kilndPodmanEnv, processesWith, runcContainersUnder } from "../helpers/leftovers.js";
import { waitFor } from "../helpers/wait.js";
import { logText, waitForLine } from "../helpers/logs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

interface App {
  name: string;
  files: (base: string) => Files;
  /** Each change, and whether the fast path may take it. */
  changes: { kind: string; files: Files | ((base: string) => Files); fast: boolean; log?: RegExp; notLog?: RegExp }[];
}

/** A step that writes /etc/passwd and /etc/group (the test base has none): user app is 1001, its group 1002. */
const ACCOUNTS = `RUN mkdir -p /etc && printf 'root:x:0:0::/root:/bin/sh\\napp:x:1001:1002::/app:/bin/sh\\n' > /etc/passwd && printf 'root:x:0:\\napp:x:1002:\\n' > /etc/group`;
const OWN_STEPS = /fast path: mounted the image below the COPY \([0-9a-f]{12}, with 2 layers of kiln's own steps on it\)/;
const STARTED_EARLIER = /fast path: started from step \d+, the first COPY that reads a changed file/;

const APPS: App[] = [
  {
    name: "srcdir",
    files: (base) => ({
      Containerfile: `FROM ${base}\nWORKDIR /app\nENV MODE=test\nCOPY deps.txt ./\nRUN cp deps.txt deps.installed && mkdir -p src/cache\nCOPY src/ ./src/\nEXPOSE 8080\nUSER 1000\nCMD ["cat", "/app/src/a.txt"]\n`,
      ".containerignore": "src/*.log\n",
      "deps.txt": "left-pad 1\n",
      "README.md": "# srcdir\n",
      "src/a.txt": "hello from the first commit\n",
      "src/run.sh": { content: "#!/bin/sh\necho run\n", mode: 0o644 },
      "src/sub/b.txt": "b\n",
    }),
    changes: [
      { kind: "edit", files: { "src/a.txt": "hello from an edited file\n" }, fast: true },
      { kind: "add in a new directory", files: { "src/new/deeper/c.txt": "c\n" }, fast: true },
      { kind: "delete (its directory goes too)", files: { "src/sub/b.txt": null }, fast: true },
      { kind: "symlink", files: { "src/link.txt": { symlink: "a.txt" } }, fast: true },
      { kind: "file outside every COPY", files: { "README.md": "# srcdir, edited\n" }, fast: true },
      { kind: "a file an earlier COPY copies (kiln starts from that COPY: its RUN, the later COPY)", files: { "deps.txt": "left-pad 2\n" }, fast: true },
      { kind: "after it, an edit", files: { "src/a.txt": "hello again\n" }, fast: true },
      {
        kind: "the Containerfile (refused)",
        files: (base) => ({ Containerfile: `FROM ${base}\nWORKDIR /app\nENV MODE=prod\nCOPY deps.txt ./\nRUN cp deps.txt deps.installed && mkdir -p src/cache\nCOPY src/ ./src/\nEXPOSE 8080\nUSER 1000\nCMD ["cat", "/app/src/a.txt"]\n` }),
        fast: false,
      },
      { kind: "the ignore file (refused)", files: { ".containerignore": "src/*.log\nsrc/*.tmp\n" }, fast: false },
    ],
  },
  {
    name: "wholecontext",
    files: (base) => ({
      Containerfile: `FROM ${base}\nWORKDIR /srv\nSHELL ["/bin/sh", "-ec"]\nCOPY package.json ./\nRUN echo installed > installed.txt\nCOPY --chown=1000:1000 . .\nLABEL app=wholecontext\nHEALTHCHECK --interval=30s CMD ["true"]\nCMD ["ls", "-l", "/srv"]\n`,
      ".containerignore": "*.md\nlogs\n",
      "package.json": '{"name":"w"}\n',
      "index.js": "console.log(1)\n",
      "lib/y.js": "y\n",
      "bin/start": { content: "#!/bin/sh\n", mode: 0o644 },
      "NOTES.md": "ignored\n",
    }),
    changes: [
      { kind: "edit", files: { "index.js": "console.log(2)\n" }, fast: true },
      { kind: "add", files: { "lib/x.js": "x\n" }, fast: true },
      { kind: "delete", files: { "lib/y.js": null }, fast: true },
      { kind: "mode change", files: { "bin/start": { content: "#!/bin/sh\n", mode: 0o755 } }, fast: true },
      { kind: "ignored directory", files: { "logs/out.txt": "log\n" }, fast: true },
      { kind: "ignored file", files: { "CHANGES.md": "ignored too\n" }, fast: true },
      { kind: "package.json, which an earlier COPY copies (refused)", files: { "package.json": '{"name":"w2"}\n' }, fast: false },
    ],
  },
  {
    name: "files",
    files: (base) => ({
      Containerfile: `FROM ${base}\nCOPY a.conf b.conf /etc/app/\nENV CONF=/etc/app\nENTRYPOINT ["cat"]\nCMD ["/etc/app/a.conf"]\n`,
      "a.conf": "a=1\n",
      "b.conf": "b=1\n",
    }),
    changes: [
      { kind: "edit", files: { "a.conf": "a=2\n" }, fast: true },
      { kind: "a source that becomes a symlink (refused: buildah copies its target)", files: { "a.conf": { symlink: "b.conf" } }, fast: false },
      { kind: "a file the COPY names is deleted (refused; the full build fails too)", files: { "b.conf": null }, fast: false },
    ],
  },
  {
    name: "multistage",
    files: (base) => ({
      Containerfile: `FROM ${base} AS deps\nWORKDIR /deps\nCOPY deps.txt ./\nRUN cp deps.txt installed.txt\nFROM ${base}\nWORKDIR /app\nCOPY --from=deps /deps/installed.txt ./\nCOPY src/ ./src/\nCMD ["cat", "/app/src/a.txt"]\n`,
      "deps.txt": "left-pad 1\n",
      "src/a.txt": "multi\n",
    }),
    changes: [
      { kind: "edit of the final COPY's sources", files: { "src/a.txt": "multi, edited\n" }, fast: true },
      { kind: "a file the dependency stage copies (refused)", files: { "deps.txt": "left-pad 2\n" }, fast: false },
      { kind: "an edit after that", files: { "src/b.txt": "b\n" }, fast: true },
    ],
  },
  {
    name: "file-to-file",
    files: (base) => ({
      Containerfile: `FROM ${base}\nWORKDIR /srv\nCOPY settings.conf ./app.conf\nCMD ["cat", "/srv/app.conf"]\n`,
      "settings.conf": "level=1\n",
    }),
    changes: [
      { kind: "edit of the one file, copied to a file of another name", files: { "settings.conf": "level=2\n" }, fast: true },
      { kind: "its mode changes", files: { "settings.conf": { content: "level=3\n", mode: 0o755 } }, fast: true },
      { kind: "the source becomes a directory (refused)", files: { "settings.conf": null, "settings.conf/inner.txt": "now a directory\n" }, fast: false },
    ],
  },
  {
    name: "file-into-existing-dir",
    files: (base) => ({
      // /etc is a directory of the base image: buildah copies the file into it.
      Containerfile: `FROM ${base}\nCOPY motd.txt /etc\nCMD ["cat", "/etc/motd.txt"]\n`,
      "motd.txt": "hello\n",
    }),
    changes: [{ kind: "edit", files: { "motd.txt": "hello, edited\n" }, fast: true }],
  },
  {
    name: "workdir-after",
    files: (base) => ({
      Containerfile: `FROM ${base}\nCOPY . /app\nWORKDIR /app\nCMD ["cat", "index.txt"]\n`,
      "index.txt": "one\n",
    }),
    changes: [
      { kind: "edit (the WORKDIR finds the COPY's destination there)", files: { "index.txt": "two\n" }, fast: true },
      {
        kind: "a WORKDIR below the destination (refused: it may create it)",
        files: (base) => ({ Containerfile: `FROM ${base}\nCOPY . /app\nWORKDIR /app/sub\nCMD ["cat", "../index.txt"]\n` }),
        fast: false,
      },
    ],
  },
  {
    // Steps after the last COPY, three stages: kiln cannot make the last layer, so only a change
    // no step reads is fast (every layer is the last full build's, as buildah's cache has them).
    name: "run-after-copy",
    files: (base) => ({
      Containerfile:
        `FROM ${base} AS build\nWORKDIR /src\nCOPY src/ ./\nRUN cat *.txt > all.txt\n` +
        `FROM ${base} AS conf\nCOPY conf/ /conf/\n` +
        `FROM ${base}\nWORKDIR /app\nCOPY --from=build /src/all.txt ./\nCOPY --from=conf /conf ./conf\nRUN ls conf > conf.list\nUSER 1000\nCMD ["cat", "/app/all.txt"]\n`,
      ".containerignore": "src/*.log\n",
      "README.md": "# run-after-copy\n",
      "src/a.txt": "a\n",
      "conf/x.conf": "x=1\n",
    }),
    changes: [
      { kind: "a file no step reads (every layer reused, the RUN's output included)", files: { "README.md": "# edited\n" }, fast: true },
      { kind: "an ignored file in a copied directory", files: { "src/debug.log": "noise\n" }, fast: true },
      { kind: "a file the build stage copies (refused: a step reads it)", files: { "src/a.txt": "a, edited\n" }, fast: false },
      { kind: "a file the middle stage copies (refused)", files: { "conf/y.conf": "y=1\n" }, fast: false },
      { kind: "after the refusals, a file no step reads", files: { "NOTES.txt": "notes\n" }, fast: true },
    ],
  },
  {
    // RUN steps after the final COPY: kiln runs them itself (runc on overlays of the image below
    // the COPY). They delete a file of a lower layer (a whiteout), replace a directory (opaque),
    // hard-link and symlink, change a lower file's mode, read ENV and HOME, and run as a user.
    name: "compile",
    files: (base) => ({
      Containerfile:
        `FROM ${base}\nWORKDIR /app\nCOPY deps.txt ./\n` +
        `RUN cp deps.txt deps.installed && mkdir -p dist old/keep /home/u && echo stale > dist/stale.txt && echo x > old/keep/x && echo gone > gone.txt && chown 1000 /home/u\n` +
        `COPY src/ ./src/\nENV STAGE=build\n` +
        `RUN cat src/*.txt > all.txt && rm gone.txt && rm -rf dist && mkdir dist && cp all.txt dist/bundle.txt && ln all.txt all.hard && ln -s all.txt all.link && chmod 600 deps.installed && echo "$STAGE $HOME $PWD" > env.txt\n` +
        `USER 1000\nRUN cp /app/all.txt /home/u/copy.txt && id > /home/u/id.txt && rm -rf /app/old 2>/dev/null; ls /app > /home/u/ls.txt\n` +
        `ENV NODE_ENV=production\nCMD ["cat", "/app/all.txt"]\n`,
      ".containerignore": "src/*.log\n",
      "README.md": "# compile\n",
      "deps.txt": "left-pad 1\n",
      "src/a.txt": "a\n",
    }),
    changes: [
      { kind: "edit of a source the RUN steps read", files: { "src/a.txt": "a, edited\n" }, fast: true },
      { kind: "a new source", files: { "src/b.txt": "b\n" }, fast: true },
      { kind: "a file no step reads", files: { "README.md": "# compile, edited\n" }, fast: true },
      { kind: "a file an earlier COPY copies (kiln starts from that COPY)", files: { "deps.txt": "left-pad 2\n" }, fast: true },
      { kind: "after it, an edit (from that COPY again: kiln keeps no image of its own steps)", files: { "src/a.txt": "a, again\n" }, fast: true },
    ],
  },
  {
    // The final COPY --from copies out of a build stage whose final COPY reads the sources and
    // whose RUN compiles them: kiln reruns that stage's COPY and RUN, and makes the COPY --from's
    // layer (owners kept from the stage, a directory of mode 700, a symlink).
    name: "stage-compile",
    files: (base) => ({
      Containerfile:
        `FROM ${base} AS deps\nWORKDIR /app\nCOPY deps.txt ./\nRUN cp deps.txt deps.installed\n` +
        `FROM deps AS build\nCOPY tool.txt ./\nCOPY src/ ./src/\n` +
        `RUN mkdir -p dist/sub && cat src/*.txt > dist/all.txt && cp src/a.txt dist/sub/a.txt && chown -R 1000:1000 dist/sub && chmod 700 dist/sub && ln -s all.txt dist/link && rm deps.installed\n` +
        `FROM ${base}\nWORKDIR /srv\nCOPY deps.txt ./\nRUN cp deps.txt runtime.txt\nCOPY --from=build /app/dist ./dist\nUSER 1000\nCMD ["cat", "/srv/dist/all.txt"]\n`,
      ".containerignore": "src/*.log\n",
      "README.md": "# stage-compile\n",
      "deps.txt": "left-pad 1\n",
      "tool.txt": "tsc 5\n",
      "src/a.txt": "a\n",
    }),
    changes: [
      { kind: "edit of a source the build stage compiles", files: { "src/a.txt": "a, edited\n" }, fast: true },
      { kind: "a new source", files: { "src/b.txt": "b\n" }, fast: true },
      { kind: "a source deleted, an ignored file added", files: { "src/b.txt": null, "src/debug.log": "noise\n" }, fast: true },
      { kind: "a file the build stage copies before its final COPY (refused)", files: { "tool.txt": "tsc 6\n" }, fast: false },
      { kind: "after the refusals, an edit", files: { "src/a.txt": "a, again\n" }, fast: true },
    ],
  },
  {
    // multi-stage.test.ts's Containerfile: a cache mount in the dependency stage, and the final
    // COPY --from of one file to a file path.
    name: "stage-file",
    files: (base) => ({
      Containerfile:
        `FROM ${base} AS deps\nWORKDIR /deps\nCOPY deps.txt ./\nRUN --mount=type=cache,target=/cache cat deps.txt > /cache/seen && cp deps.txt installed.txt\n` +
        `FROM ${base} AS build\nWORKDIR /src\nCOPY --from=deps /deps/installed.txt ./\nCOPY src/ ./src/\nRUN cat installed.txt src/*.txt > bundle.txt\n` +
        `FROM ${base}\nCOPY --from=build /src/bundle.txt /app/bundle.txt\nCMD ["cat", "/app/bundle.txt"]\n`,
      "deps.txt": "left-pad 1\n",
      "src/a.txt": "hello 0\n",
    }),
    changes: [
      { kind: "edit of a source", files: { "src/a.txt": "hello 1\n" }, fast: true },
      { kind: "the dependency file (refused)", files: { "deps.txt": "left-pad 2\n" }, fast: false },
    ],
  },
  {
    // The dependency file changes: kiln starts from the COPY that reads it, runs the cache-mount
    // RUN (sharing=locked) on the cache directory buildah uses, makes the later COPY's layer and
    // runs the RUN after it. The COPY overwrites a file of the image below it, which the RUN must see.
    name: "deps-cache",
    files: (base) => ({
      Containerfile:
        `FROM ${base}\nWORKDIR /app\nENV NODE_ENV=production\nRUN mkdir -p /root && echo stale > package.json && echo old > old.txt\n` +
        `COPY package.json lock.txt ./\n` +
        // It deletes a file of the image below: a whiteout in its layer (and in kiln's snapshot of it, which a later build stands on).
        `RUN --mount=type=cache,target=/root/.npm,sharing=locked rm old.txt && mkdir -p node_modules && cat package.json lock.txt > node_modules/installed.txt && cat package.json >> /root/.npm/seen && test -s /root/.npm/seen\n` +
        `COPY src/ ./src/\nRUN test ! -e old.txt && cat node_modules/installed.txt src/*.txt > bundle.txt\nEXPOSE 8080\nUSER nobody\nCMD ["cat", "/app/bundle.txt"]\n`,
      "package.json": '{"name":"d","v":1}\n',
      "lock.txt": "lock 1\n",
      "src/a.txt": "a\n",
    }),
    changes: [
      { kind: "edit of a source", files: { "src/a.txt": "a, edited\n" }, fast: true },
      { kind: "the dependency file (kiln starts from its COPY)", files: { "package.json": '{"name":"d","v":2}\n' }, fast: true, log: /fast path: started from step 5, the first COPY that reads a changed file: made 2 COPY layers and ran 2 RUN steps/ },
      { kind: "a source and the lock file", files: { "src/b.txt": "b\n", "lock.txt": "lock 2\n" }, fast: true },
      // kiln stands on its snapshots of the two steps it ran below the final COPY: npm ci does not run again.
      { kind: "a source after that (on kiln's own steps below the final COPY)", files: { "src/a.txt": "a, again\n" }, fast: true, log: OWN_STEPS, notLog: STARTED_EARLIER },
      { kind: "a source deleted after that", files: { "src/b.txt": null }, fast: true, log: OWN_STEPS, notLog: STARTED_EARLIER },
      { kind: "the dependency file again", files: { "package.json": '{"name":"d","v":3}\n' }, fast: true, log: STARTED_EARLIER },
      { kind: "a source after the second dependency change", files: { "src/c.txt": "c\n" }, fast: true, log: OWN_STEPS, notLog: STARTED_EARLIER },
    ],
  },
  {
    // Later COPYs with --chown, by number and by name: kiln learned their owners from the last
    // full build's layers, and a name holds while no step kiln runs writes /etc/passwd or /etc/group.
    name: "deps-chown",
    files: (base) => ({
      Containerfile:
        `FROM ${base}\nWORKDIR /app\n${ACCOUNTS}\n` +
        `COPY --chown=app:app package.json ./\nRUN mkdir -p node_modules && cat package.json > node_modules/installed.txt\n` +
        `COPY --chown=1000:1000 conf/ ./conf/\nCOPY --chown=app src/ ./src/\nRUN cat node_modules/installed.txt conf/*.txt src/*.txt > bundle.txt\nUSER app\nCMD ["cat", "/app/bundle.txt"]\n`,
      "package.json": '{"name":"c","v":1}\n',
      "conf/c.txt": "c 1\n",
      "src/a.txt": "a\n",
    }),
    changes: [
      { kind: "edit of a source (its COPY has --chown=app)", files: { "src/a.txt": "a, edited\n" }, fast: true },
      { kind: "the dependency file (the later COPYs have --chown by number and by name)", files: { "package.json": '{"name":"c","v":2}\n' }, fast: true, log: STARTED_EARLIER },
      { kind: "a source after that", files: { "src/b.txt": "b\n" }, fast: true, log: /with 3 layers of kiln's own steps on it/, notLog: STARTED_EARLIER },
      { kind: "a file the --chown=1000:1000 COPY copies", files: { "conf/c.txt": "c 2\n" }, fast: true, log: /fast path: started from step 6,/ },
    ],
  },
  {
    // A RUN kiln reruns adds a user that a later COPY --chown names: the owner kiln learned could be stale.
    name: "deps-passwd",
    files: (base) => ({
      Containerfile:
        `FROM ${base}\nWORKDIR /app\n${ACCOUNTS}\nCOPY package.json ./\n` +
        `RUN cat package.json > installed.txt && echo "svc:x:1003:1003::/app:/bin/sh" >> /etc/passwd && echo "svc:x:1003:" >> /etc/group\n` +
        `COPY --chown=svc:svc src/ ./src/\nCMD ["cat", "/app/src/a.txt"]\n`,
      "package.json": '{"name":"p","v":1}\n',
      "src/a.txt": "a\n",
    }),
    changes: [
      { kind: "edit of a source (nothing below its COPY runs again)", files: { "src/a.txt": "a, edited\n" }, fast: true },
      { kind: "the dependency file (refused: the RUN kiln would rerun writes /etc/passwd)", files: { "package.json": '{"name":"p","v":2}\n' }, fast: false, log: /fast path: not taken: a COPY --chown=svc:svc comes after a RUN that wrote \/etc\/(passwd|group) \(kiln learned the owner from the last full build\)/ },
    ],
  },
  {
    name: "large",
    files: (base) => ({
      // Over 4 MiB: the fast path's layer is several gzip members, the random part stored as it is.
      Containerfile: `FROM ${base}\nCOPY data/ /data/\nCMD ["wc", "-c", "/data/blob.bin"]\n`,
      "data/blob.bin": randomBytes(3 * 1024 * 1024).toString("latin1"),
      "data/text.txt": "compressible\n".repeat(200_000),
    }),
    changes: [{ kind: "edit of the large files", files: { "data/blob.bin": randomBytes(3 * 1024 * 1024).toString("latin1"), "data/text.txt": "compressible, edited\n".repeat(200_000) }, fast: true }],
  },
];

describe("fast path", () => {
  let dir: string, reg: TestRegistry, base: string, fast: TestKilnd, full: TestKilnd;

  before(async () => {
    dir = tempDir("fastpath");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    // The fast side runs the bundle kilnd ships as; the full side src/ under tsx.
    fast = await startKilnd({ data: join(dir, "fast"), registry: reg.host, bundle: true });
    full = await startKilnd({ data: join(dir, "full"), registry: reg.host, args: ["--fast-path", "off"] });
  });
  after(async () => {
    await fast?.stop();
    await full?.stop();
    await reg?.stop();
    removeTree(dir);
  });

  /** Builds the commit on both kilnds; when both succeed, their images must be the same. */
  const buildBoth = async (repo: TestRepo, app: string, commit: string) => {
    const r = await createDifferential(fast, full, reg)(repo, app, commit);
    assert.deepEqual(r.differences, []);
    return r;
  };

  for (const app of APPS) {
    describe(app.name, () => {
      let repo: TestRepo;
      test("the first build is a full one and becomes the base", async () => {
        repo = makeRepo(join(dir, `repo-${app.name}`), app.files(base));
        const { f } = await buildBoth(repo, app.name, repo.head());
        assert.equal(f.state, BuildState.SUCCEEDED, f.error);
        assert.equal(f.fastPath, false);
        assert.match(await logText(fast, f.id), /fast path: not taken: no full build of this project/);
        const next = {
          "run-after-copy": /fast path: the next build whose change no step reads reuses this image; a change a step reads takes the full build \(the final stage has no COPY from the context\)/,
          compile: /fast path: the next build of a source change can start from this one \(kiln runs the 2 RUN steps after the final COPY\); a change an earlier step reads starts from an earlier COPY$/m,
          "deps-chown": /fast path: the next build of a source change can start from this one \(kiln runs the 1 RUN step after the final COPY\); a change an earlier step reads starts from one of 2 earlier COPYs$/m,
          "deps-cache": /fast path: the next build of a source change can start from this one \(kiln runs the 1 RUN step after the final COPY\); a change an earlier step reads starts from an earlier COPY$/m,
          "stage-file": /fast path: the next build of a source change can start from this one \(kiln reruns stage 2's final COPY and its 1 RUN step, then makes the COPY --from's layer\)/,
          "stage-compile": /fast path: the next build of a source change can start from this one \(kiln reruns stage 2's final COPY and its 1 RUN step, then makes the COPY --from's layer\)/,
        }[app.name];
        assert.match(await logText(fast, f.id), next ?? /fast path: the next build of a source change can start from this one(;|$)/m);
      });
      for (const change of app.changes) {
        test(`${change.kind}: ${change.fast ? "fast, and equal to the full build" : "the full build runs"}`, async () => {
          const commit = repo.commit(typeof change.files === "function" ? change.files(base) : change.files, change.kind);
          const { f } = await buildBoth(repo, app.name, commit);
          assert.equal(f.fastPath, change.fast, await logText(fast, f.id));
          if (!change.fast) assert.match(await logText(fast, f.id), /fast path: not taken: /);
          if (change.log) assert.match(await logText(fast, f.id), change.log);
          if (change.notLog) assert.doesNotMatch(await logText(fast, f.id), change.notLog);
        });
      }
    });
  }

  test("the comparison itself sees a one-file difference (a control)", async () => {
    const builds = (await full.client.listBuilds({ project: "srcdir", limit: 50 })).builds.reverse();
    const [first, edited] = [builds[0]!, builds[1]!];
    const a = await viewImage(reg.host, "full/srcdir", first.commit);
    const b = await viewImage(reg.host, "fast/srcdir", edited.commit);
    assert.deepEqual(
      fsDifferences(a.files, b.files).map((d) => d.split(":")[0]),
      ["app/src/a.txt"],
    );
  });

  test("kiln keeps the snapshots of its own steps the project's base stands on, and no others", async () => {
    // deps-cache started from its dependency COPY three times: only the newest build's snapshots stay.
    const root = join(dir, "fast", "fastpath", "snapshots", "deps-cache");
    await waitFor(() => readdirSync(root).length === 1, 10_000, "the first dependency change's snapshots to be swept");
    const kept = readdirSync(root);
    const builds = (await fast.client.listBuilds({ project: "deps-cache", limit: 50 })).builds;
    const started = [];
    for (const b of builds) if (STARTED_EARLIER.test(await logText(fast, b.id))) started.push(b.id);
    assert.equal(started.length, 3, "three builds started from the dependency COPY");
    assert.deepEqual(kept, [started[0]], "the newest of them");
    // The two steps below the final COPY: the dependency COPY's layer and the cache-mount RUN's.
    assert.deepEqual(readdirSync(join(root, kept[0]!)).sort(), ["0", "1"]);
    assert.ok(readdirSync(join(root, kept[0]!, "1", "app", "node_modules")).includes("installed.txt"));
  });

  test("the fast path's image runs", async () => {
    const env = kilndPodmanEnv(join(dir, "fast"));
    const b = (await fast.client.listBuilds({ project: "srcdir", limit: 50 })).builds.find((x) => x.fastPath);
    assert.ok(b, "a fast build of srcdir");
    const out = execFileSync("podman", ["run", "--rm", `${reg.host}/fast/srcdir:${b.commit}`], { env, encoding: "utf8" });
    assert.equal(out, "hello again\n");
    // A layer of several gzip members (one part stored) is pulled and run as any other.
    const large = (await fast.client.listBuilds({ project: "large", limit: 50 })).builds.find((x) => x.fastPath);
    assert.ok(large, "a fast build of large");
    const wc = execFileSync("podman", ["run", "--rm", `${reg.host}/fast/large:${large.commit}`], { env, encoding: "utf8" });
    assert.match(wc, /^\d+ \/data\/blob\.bin\n$/);
  });

  test("a cancel while kiln runs a RUN step stops it and leaves nothing mounted or running", async () => {
    const SLEEP = 47;
    const repo = makeRepo(join(dir, "repo-slow-run"), {
      Containerfile: `FROM ${base}\nWORKDIR /app\nCOPY deps.txt ./\nRUN cp deps.txt deps.installed\nCOPY src/ ./src/\nRUN if [ -f src/slow ]; then echo before-sleep; sleep ${SLEEP}; fi; cat src/*.txt > all.txt\n`,
      "deps.txt": "1\n",
      "src/a.txt": "a\n",
    });
    const first = await fast.buildCommit({ project: "slow-run", url: repo.url, commit: repo.head(), image: `${reg.host}/fast/slow-run` });
    assert.equal(first.state, BuildState.SUCCEEDED, first.error);
    const data = join(dir, "fast");
    const mountedBefore = new Set(containerMountsUnder(data));
    const commit = repo.commit({ "src/slow": "1\n" }, "slow");
    const { build } = await fast.client.build({ project: "slow-run", source: { kind: { case: "git", value: { url: repo.url, commit } } }, image: `${reg.host}/fast/slow-run` });
    await waitForLine(fast.client, build!.id, "before-sleep");
    await waitFor(() => processesWith(`sleep ${SLEEP}`).length > 0, 5000, "the RUN step's sleep to start");
    const { build: cancelled } = await fast.client.cancel({ buildId: build!.id });
    assert.equal(cancelled!.state, BuildState.CANCELLED);
    const mountsUnder = (d: string) => readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" ")[1] ?? "").filter((m) => m.startsWith(`${d}/`));
    const clean = () => processesWith(`sleep ${SLEEP}`).length === 0 && runcContainersUnder(data).length === 0 && mountsUnder(join(data, "tmp")).length === 0;
    await waitFor(clean, 10_000, "the RUN step and its overlays to be gone").catch(() => {});
    assert.deepEqual(processesWith(`sleep ${SLEEP}`), [], "the RUN step's process is gone");
    assert.deepEqual(runcContainersUnder(data), [], "no runc container");
    assert.deepEqual(mountsUnder(join(data, "tmp")), [], "no overlay of the fast path mounted");
    // The image below the COPY stays mounted, once, for the next build (until a prune or kilnd's exit).
    const added = containerMountsUnder(data).filter((m) => !mountedBefore.has(m));
    assert.ok(added.length <= 1, `at most the one image mount kept: ${added.join(", ")}`);
    // And the next build of the project still takes the fast path.
    const next = await fast.buildCommit({ project: "slow-run", url: repo.url, commit: repo.commit({ "src/slow": null, "src/b.txt": "b\n" }, "quick"), image: `${reg.host}/fast/slow-run` });
    assert.equal(next.state, BuildState.SUCCEEDED, next.error);
    assert.equal(next.fastPath, true, await logText(fast, next.id));
  });
});
