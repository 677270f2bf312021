// kiln's fast path against the truth, for builds that start below the final COPY: a change an
// earlier COPY reads (kiln starts from that COPY, runs the RUN steps after it, and stands later
// builds on its snapshots of them), later COPYs with --chown, and a final COPY --from an earlier
// stage kiln reruns. Every commit is built with and without the fast path and the two pushed
// images must be the same (helpers/fast-path-apps.ts).
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { ACCOUNTS, describeApps, fastPathWorld, OWN_STEPS, STARTED_EARLIER, type App } from "../helpers/fast-path-apps.js";
import { logText } from "../helpers/logs.js";
import { waitFor } from "../helpers/wait.js";

const APPS: App[] = [
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
    // The final COPY --from copies out of a build stage whose final COPY reads the sources and
    // whose RUN compiles them: kiln reruns that stage's COPY and RUN, and makes the COPY --from's
    // layer (owners kept from the stage, a directory of mode 700, a symlink).
    name: "stage-compile",
    recorded: /fast path: the next build of a source change can start from this one \(kiln reruns stage 2's final COPY and its 1 RUN step, then makes the COPY --from's layer\)/,
    files: (base) => ({
      Containerfile:
        `FROM ${base} AS deps\nWORKDIR /app\nCOPY deps.txt ./\nRUN cp deps.txt deps.installed\n` +
        `FROM deps AS build\nARG STAMP=built\nCOPY tool.txt ./\nCOPY src/ ./src/\n` +
        `RUN mkdir -p dist/sub && cat src/*.txt > dist/all.txt && cp src/a.txt dist/sub/a.txt && chown -R 1000:1000 dist/sub && chmod 700 dist/sub && ln -s all.txt dist/link && rm deps.installed && echo "$STAMP" > dist/stamp\n` +
        `FROM ${base}\nWORKDIR /srv\nCOPY deps.txt ./\nRUN cp deps.txt runtime.txt\nCOPY --from=build /app/dist ./dist\nUSER 1000\nCMD ["cat", "/srv/dist/all.txt"]\n`,
      ".containerignore": "src/*.log\n",
      "README.md": "# stage-compile\n",
      "deps.txt": "left-pad 1\n",
      "tool.txt": "tsc 5\n",
      "src/a.txt": "a\n",
    }),
    changes: [
      // The stage's RUN sees its ARG (kiln reruns it with the value, and reads buildah's history line with it).
      { kind: "edit of a source the build stage compiles", files: { "src/a.txt": "a, edited\n" }, fast: true, contents: { "srv/dist/stamp": "built\n" } },
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
    recorded: /fast path: the next build of a source change can start from this one \(kiln reruns stage 2's final COPY and its 1 RUN step, then makes the COPY --from's layer\)/,
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
    recorded: /fast path: the next build of a source change can start from this one \(kiln runs the 1 RUN step after the final COPY\); a change an earlier step reads starts from an earlier COPY$/m,
    files: (base) => ({
      Containerfile:
        `FROM ${base}\nWORKDIR /app\nENV NODE_ENV=production\nRUN mkdir -p /root/.npm && echo image > /root/.npm/from-image && echo stale > package.json && echo old > old.txt\n` +
        `COPY package.json lock.txt ./\n` +
        // It deletes a file of the image below: a whiteout in its layer (and in kiln's snapshot of it, which a later build stands on).
        // buildah removes a cache mount's target after the step: /root/.npm, which the image had, goes (a whiteout);
        // /opt/tool/cache, which it had not, leaves the directories runc made for it (/opt/tool).
        `RUN --mount=type=cache,target=/root/.npm,sharing=locked --mount=type=cache,target=/opt/tool/cache rm old.txt && mkdir -p node_modules && cat package.json lock.txt > node_modules/installed.txt && cat package.json >> /root/.npm/seen && test -s /root/.npm/seen && test ! -e /root/.npm/from-image\n` +
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
    recorded: /fast path: the next build of a source change can start from this one \(kiln runs the 1 RUN step after the final COPY\); a change an earlier step reads starts from one of 2 earlier COPYs$/m,
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
];

describe("fast path: starts below the final COPY", () => {
  const w = fastPathWorld("fastpath-starts");
  describeApps(w, APPS);

  test("kiln keeps the snapshots of its own steps the project's base stands on, and no others", async () => {
    // deps-cache started from its dependency COPY three times: only the newest build's snapshots stay.
    const root = join(w.dir, "fast", "fastpath", "snapshots", "deps-cache");
    await waitFor(() => readdirSync(root).length === 1, 10_000, "the first dependency change's snapshots to be swept");
    const kept = readdirSync(root);
    const builds = (await w.fast.client.listBuilds({ project: "deps-cache", limit: 50 })).builds;
    const started = [];
    for (const b of builds) if (STARTED_EARLIER.test(await logText(w.fast, b.id))) started.push(b.id);
    assert.equal(started.length, 3, "three builds started from the dependency COPY");
    assert.deepEqual(kept, [started[0]], "the newest of them");
    // The two steps below the final COPY: the dependency COPY's layer and the cache-mount RUN's.
    assert.deepEqual(readdirSync(join(root, kept[0]!)).sort(), ["0", "1"]);
    assert.ok(readdirSync(join(root, kept[0]!, "1", "app", "node_modules")).includes("installed.txt"));
  });
});
