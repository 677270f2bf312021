// kiln's fast path against the truth, for changes of the final COPY: every commit is built twice,
// by a kilnd with the fast path and by one without (a full podman build), and the two pushed
// images must have the same filesystem and config (helpers/fast-path-apps.ts). Several apps,
// every kind of change (edit, add, delete, rename, mode, symlink, ignored file, file outside the
// COPY), RUN steps after the final COPY, and the changes the fast path must refuse. Builds that
// start below the final COPY (an earlier COPY, an earlier stage) are in fast-path-starts.test.ts.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { describeApps, fastPathWorld, type App } from "../helpers/fast-path-apps.js";
import { makeRepo } from "../helpers/git-repo.js";
import { fsDifferences, viewImage } from "../helpers/image-fs.js";
import { containerMountsUnder, kilndPodmanEnv, processesWith, runcContainersUnder } from "../helpers/leftovers.js";
import { waitFor } from "../helpers/wait.js";
import { logText, waitForLine } from "../helpers/logs.js";

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
    // A RUN sees the stage's ARGs (a build arg, a default, a global ARG; an ENV of the same name
    // wins) and buildah writes their values in its history: kiln's RUN must see the same.
    name: "build-args",
    buildArgs: { MODE: "prod", FLAVOUR: "vanilla", UNDECLARED: "never seen" },
    recorded: /can start from this one \(kiln runs the 1 RUN step after the final COPY\); a change an earlier step reads starts from an earlier COPY/,
    files: (base) => ({
      Containerfile:
        `ARG GREETING=hello\nARG UNUSED=global\nFROM ${base}\nARG GREETING\nARG MODE=dev FLAVOUR\nARG EMPTY=\nWORKDIR /app\n` +
        `COPY deps.txt ./\nRUN echo "$MODE $GREETING $FLAVOUR [$EMPTY] [$UNDECLARED] [$UNUSED]" > deps.args\n` +
        `COPY src/ ./src/\nARG LATE=late\nENV MODE=from-env\nRUN env | grep -E '^(MODE|GREETING|FLAVOUR|EMPTY|LATE|UNDECLARED|UNUSED)=' | sort > src.args && cat src/a.txt >> src.args\nCMD ["cat", "/app/src.args"]\n`,
      "deps.txt": "one\n",
      "src/a.txt": "first\n",
    }),
    changes: [
      {
        kind: "edit (kiln runs the RUN after the COPY with the ARG values)",
        files: { "src/a.txt": "second\n" },
        fast: true,
        contents: { "app/deps.args": "prod hello vanilla [] [] []\n", "app/src.args": "EMPTY=\nFLAVOUR=vanilla\nGREETING=hello\nLATE=late\nMODE=from-env\nsecond\n" },
      },
      { kind: "a file the earlier COPY copies (both RUN steps, with their ARG values)", files: { "deps.txt": "two\n" }, fast: true, log: /fast path: started from step/ },
    ],
  },
  {
    // RUN steps with secret mounts, which kiln runs itself: the default target (/run/secrets/<id>,
    // a directory the image lacks: runc makes it and it stays, as in buildah's layer), a target the
    // image has (a file: a whiteout after), mode and owner; one the request does not give is not mounted.
    name: "secret-run",
    secrets: { npmrc: "registry-token-for-the-test-0123", other: "another-secret-value-4567" },
    files: (base) => ({
      Containerfile:
        `FROM ${base}\nWORKDIR /app\nRUN mkdir -p /root && echo from-image > /root/.npmrc\nCOPY deps.txt ./\n` +
        `RUN --mount=type=secret,id=npmrc wc -c < /run/secrets/npmrc > deps.secret && cat deps.txt >> deps.secret\n` +
        `COPY src/ ./src/\n` +
        `RUN --mount=type=secret,id=other,target=/root/.npmrc,mode=0440,uid=1000,gid=1000 --mount=type=secret,id=absent ` +
        `stat -c '%a %u %g %s' /root/.npmrc > src.secret && test ! -e /run/secrets/absent && cat src/a.txt >> src.secret\nCMD ["cat", "/app/src.secret"]\n`,
      "deps.txt": "one\n",
      "src/a.txt": "first\n",
    }),
    recorded: /can start from this one \(kiln runs the 1 RUN step after the final COPY\); a change an earlier step reads starts from an earlier COPY/,
    changes: [
      {
        kind: "edit (kiln runs the RUN with its secrets)",
        files: { "src/a.txt": "second\n" },
        fast: true,
        contents: { "app/deps.secret": "32\none\n", "app/src.secret": "440 1000 1000 25\nsecond\n" },
      },
      { kind: "a file the earlier COPY copies (both secret RUN steps)", files: { "deps.txt": "two\n" }, fast: true, log: /fast path: started from step/, contents: { "app/deps.secret": "32\ntwo\n" } },
    ],
  },
  {
    // A Docker-format build runs shell-form RUN steps with the stage's SHELL (the parent image's,
    // or one set after the COPY), and exec-form ones without a shell.
    name: "shell-exec",
    files: (base) => ({
      Containerfile:
        `FROM ${base}\nWORKDIR /app\nSHELL ["/bin/busybox", "env", "SHELLED=before", "/bin/sh", "-c"]\nCOPY deps.txt ./\n` +
        `RUN echo "[$SHELLED]" > deps.shell && cat deps.txt >> deps.shell\nCOPY src/ ./src/\n` +
        `RUN ["/bin/sh", "-c", "echo exec-form-$SHELLED > /app/exec.txt"]\n` +
        `SHELL ["/bin/busybox", "env", "SHELLED=after", "/bin/sh", "-c"]\nRUN echo "[$SHELLED]" > src.shell && cat src/a.txt >> src.shell\nCMD ["cat", "/app/src.shell"]\n`,
      "deps.txt": "one\n",
      "src/a.txt": "first\n",
    }),
    recorded: /can start from this one \(kiln runs the 2 RUN steps after the final COPY\); a change an earlier step reads starts from an earlier COPY/,
    changes: [
      {
        kind: "edit (an exec-form RUN, and a RUN with the SHELL set after the COPY)",
        files: { "src/a.txt": "second\n" },
        fast: true,
        contents: { "app/deps.shell": "[before]\none\n", "app/exec.txt": "exec-form-\n", "app/src.shell": "[after]\nsecond\n" },
      },
      { kind: "a file the earlier COPY copies (a RUN with the parent image's SHELL)", files: { "deps.txt": "two\n" }, fast: true, log: /fast path: started from step/, contents: { "app/deps.shell": "[before]\ntwo\n" } },
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
      // kiln starts from that COPY and runs the RUN after it with the stage's SHELL (the image's, in this Docker-format build).
      { kind: "package.json, which an earlier COPY copies", files: { "package.json": '{"name":"w2"}\n' }, fast: true, log: /fast path: started from step/ },
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
    recorded: /fast path: the next build whose change no step reads reuses this image; a change a step reads takes the full build \(the final stage has no COPY from the context\)/,
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
    recorded: /fast path: the next build of a source change can start from this one \(kiln runs the 2 RUN steps after the final COPY\); a change an earlier step reads starts from an earlier COPY$/m,
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
  const w = fastPathWorld("fastpath");
  describeApps(w, APPS);

  test("the comparison itself sees a one-file difference (a control)", async () => {
    const builds = (await w.full.client.listBuilds({ project: "srcdir", limit: 50 })).builds.reverse();
    const [first, edited] = [builds[0]!, builds[1]!];
    const a = await viewImage(w.reg.host, "full/srcdir", first.commit);
    const b = await viewImage(w.reg.host, "fast/srcdir", edited.commit);
    assert.deepEqual(
      fsDifferences(a.files, b.files).map((d) => d.split(":")[0]),
      ["app/src/a.txt"],
    );
  });

  test("the fast path's image runs", async () => {
    const env = kilndPodmanEnv(join(w.dir, "fast"));
    const b = (await w.fast.client.listBuilds({ project: "srcdir", limit: 50 })).builds.find((x) => x.fastPath);
    assert.ok(b, "a fast build of srcdir");
    const out = execFileSync("podman", ["run", "--rm", `${w.reg.host}/fast/srcdir:${b.commit}`], { env, encoding: "utf8" });
    assert.equal(out, "hello again\n");
    // A layer of several gzip members (one part stored) is pulled and run as any other.
    const large = (await w.fast.client.listBuilds({ project: "large", limit: 50 })).builds.find((x) => x.fastPath);
    assert.ok(large, "a fast build of large");
    const wc = execFileSync("podman", ["run", "--rm", `${w.reg.host}/fast/large:${large.commit}`], { env, encoding: "utf8" });
    assert.match(wc, /^\d+ \/data\/blob\.bin\n$/);
  });

  test("a commit built again is the image it was, after a full build or a fast one: nothing is pushed", async () => {
    // srcdir's last build was a full one (the ignore file changed), large's a fast one.
    for (const project of ["srcdir", "large"]) {
      const [last] = (await w.fast.client.listBuilds({ project, limit: 1 })).builds;
      assert.ok(last && last.state === BuildState.SUCCEEDED, `${project}: a last build`);
      const source = (await w.fast.client.getBuild({ buildId: last.id })).build!;
      const again = await w.fast.buildCommit({ project, url: `file://${join(w.dir, `repo-${project}`)}`, commit: last.commit, image: `${w.reg.host}/fast/${project}` });
      assert.equal(again.state, BuildState.SUCCEEDED, again.error);
      assert.equal(again.fastPath, true, project);
      assert.deepEqual([again.imageDigest, again.imageId], [source.imageDigest, source.imageId], `${project}: the same image`);
      assert.equal(await w.reg.digest(`fast/${project}`, last.commit), source.imageDigest);
      assert.match(await logText(w.fast, again.id), /fast path: this commit was the last build's, with this request: the image is that build's own, as its tag has it \(\d+ steps from cache, nothing to push\)/);
    }
    // The full path gives the same image too: every step comes from the cache, kiln's label step included.
    const [last] = (await w.full.client.listBuilds({ project: "srcdir", limit: 1 })).builds;
    const again = await w.full.buildCommit({ project: "srcdir", url: `file://${join(w.dir, "repo-srcdir")}`, commit: last!.commit, image: `${w.reg.host}/full/srcdir` });
    assert.deepEqual([again.imageDigest, again.imageId, again.stepsCached], [last!.imageDigest, last!.imageId, again.stepsTotal]);
  });

  test("a cancel while kiln runs a RUN step stops it and leaves nothing mounted or running", async () => {
    const SLEEP = 47;
    const repo = makeRepo(join(w.dir, "repo-slow-run"), {
      Containerfile: `FROM ${w.base}\nWORKDIR /app\nCOPY deps.txt ./\nRUN cp deps.txt deps.installed\nCOPY src/ ./src/\nRUN if [ -f src/slow ]; then echo before-sleep; sleep ${SLEEP}; fi; cat src/*.txt > all.txt\n`,
      "deps.txt": "1\n",
      "src/a.txt": "a\n",
    });
    const first = await w.fast.buildCommit({ project: "slow-run", url: repo.url, commit: repo.head(), image: `${w.reg.host}/fast/slow-run` });
    assert.equal(first.state, BuildState.SUCCEEDED, first.error);
    const data = join(w.dir, "fast");
    const mountedBefore = new Set(containerMountsUnder(data));
    const commit = repo.commit({ "src/slow": "1\n" }, "slow");
    const { build } = await w.fast.client.build({ project: "slow-run", source: { kind: { case: "git", value: { url: repo.url, commit } } }, image: `${w.reg.host}/fast/slow-run` });
    await waitForLine(w.fast.client, build!.id, "before-sleep");
    await waitFor(() => processesWith(`sleep ${SLEEP}`).length > 0, 5000, "the RUN step's sleep to start");
    const { build: cancelled } = await w.fast.client.cancel({ buildId: build!.id });
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
    const next = await w.fast.buildCommit({ project: "slow-run", url: repo.url, commit: repo.commit({ "src/slow": null, "src/b.txt": "b\n" }, "quick"), image: `${w.reg.host}/fast/slow-run` });
    assert.equal(next.state, BuildState.SUCCEEDED, next.error);
    assert.equal(next.fastPath, true, await logText(w.fast, next.id));
  });
});
