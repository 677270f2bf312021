// Scenarios for the fast path's differential test: a small repository (files, directories,
// symlinks to files and directories, dangling and outside ones, an ignore file), a Containerfile
// (one stage, or a dependency stage before it; ARGs, global and of the stage, and build args; a SHELL) with earlier COPYs of files, directories and globs in every spelling (plain,
// quoted, JSON), a RUN that reads what they copied, a final COPY, maybe a RUN after it, and metadata steps, a context
// spelled several ways (".", "./", a directory, the same through a symlink), and a sequence of
// commits: edits, additions, deletions, renames, mode changes, symlinks made and retargeted,
// ignore-file and .gitattributes edits; now and then an earlier file's edit, then sources'. Generated with fast-check, reproducible from a seed.
import fc from "fast-check";
import type { Files } from "../helpers/git-repo.js";

export interface Scenario {
  /** Where the app lives in the repository ("" for the root) and how the request spells the context. */
  dir: string;
  context: string;
  containerfile: string;
  /** The request's build args (every build of the scenario). */
  buildArgs: Record<string, string>;
  files: Files;
  commits: Files[];
}

type Spelling = "plain" | "double" | "single" | "json";

const spell = (words: string[], how: Spelling): string => {
  if (how === "json") return JSON.stringify(words);
  if (how === "plain") return words.join(" ");
  const q = how === "double" ? '"' : "'";
  return words.map((w) => `${q}${w}${q}`).join(" ");
};

const EARLIER_SOURCES = ["deps.txt", "lib/", "lib/a.txt", "lib*", "conf.d", "conf.d/x.conf", "libextra.txt"];
const FINAL_SOURCES = ["src/", ".", "src/a.txt", "src"];
const SOURCE_PATHS = ["src/a.txt", "src/sub/b.txt", "src/new.txt", "src/debug.log"];
// Changes to the final COPY's sources come up more often: they are the fast path's own case.
const PATHS = ["deps.txt", "lib/a.txt", "lib/b.txt", "libextra.txt", "conf.d/x.conf", "README.md", "notes/n.md", ...SOURCE_PATHS, ...SOURCE_PATHS, ...SOURCE_PATHS];
const LINK_TARGETS = ["a.txt", "sub", "../deps.txt", "../lib", "lib/a.txt", "lib", "missing", "/etc/passwd", "../../outside"];
// RUN steps after the final COPY, which the fast path runs itself: they read what it copied, delete
// (whiteouts, a directory replaced: opaque), write and change modes.
const AFTER_RUNS = [
  // (not /etc/hosts, /etc/hostname, /etc/resolv.conf: bound in per run, with the run's hostname)
  "RUN (find /app /etc /opt -type f ! -name hosts ! -name hostname ! -name resolv.conf 2>/dev/null | sort | xargs cat) > /after.all 2>&1 || true",
  "RUN rm -rf /app/sub /app/src/sub /etc/motd.txt 2>/dev/null; mkdir -p /app/gen && (ls -la /app | wc -l) > /app/gen/count.txt; chmod -R go-w /app 2>/dev/null || true",
  "RUN rm -rf /opt/deps && mkdir -p /opt/deps && echo rebuilt > /opt/deps/again.txt && ln -sf again.txt /opt/deps/link",
  // Cache mounts: buildah removes the target after the step (/opt/deps, when earlier COPYs made it: a
  // whiteout) and leaves the directories runc made above a missing one. The cache's content never reaches the image.
  "RUN --mount=type=cache,target=/opt/deps,sharing=locked --mount=type=cache,target=/var/cache/fz/deeper touch /opt/deps/used /var/cache/fz/deeper/used && mkdir -p /app/cached",
  // What a RUN sees of the ARGs (build-args.ts): declared or not, with a default, a build arg, a global ARG, an ENV of the same name.
  "RUN (env | grep -E '^(FZ_[A-Z]+|MODE)=' | sort) > /app.args 2>&1 || true",
  // Exec form: no shell (and so no SHELL's variable). Names only: each kilnd's checkout gives the files its own mtimes.
  'RUN ["/bin/sh", "-c", "(ls -a /app; env | grep -c FZ_SHELL) > /app.exec 2>&1 || true"]',
];
// A SHELL in the final stage (Docker-format builds run shell-form RUN steps with it): before the earlier COPYs, or after the final one.
const SHELLS = ['SHELL ["/bin/busybox", "env", "FZ_SHELL=1", "/bin/sh", "-c"]', 'SHELL ["/bin/sh", "-ec"]'];
// ARG lines of the final stage (before its first COPY, or among the steps after the final one) and a global one.
const ARGS = ["ARG FZ_DEFAULT=d", "ARG FZ_GIVEN=default", "ARG FZ_BARE", "ARG FZ_GLOBAL", "ARG MODE=from-arg", "ARG FZ_A=1 FZ_B"];
const BUILD_ARGS: Record<string, string>[] = [{}, { FZ_GIVEN: "given", FZ_BARE: "bare" }, { FZ_B: "b", FZ_UNDECLARED: "u", MODE: "given" }];
const METADATA = ["ENV MODE=fuzz", "LABEL fuzz=1", "EXPOSE 8080", 'CMD ["cat", "/app/a.txt"]', "USER 1000", "WORKDIR /app"];

const containerfileArb = (base: string, stages: boolean) =>
  fc
    .record({
      workdir: fc.boolean(),
      stage: (stages ? fc.option : () => fc.constant(undefined))(fc.record({ source: fc.constantFrom(...EARLIER_SOURCES), how: fc.constantFrom<Spelling>("plain", "double", "json") }), { nil: undefined }),
      earlier: fc.array(fc.record({ source: fc.constantFrom(...EARLIER_SOURCES), how: fc.constantFrom<Spelling>("plain", "double", "single", "json") }), { maxLength: 2 }),
      final: fc.record({ source: fc.constantFrom(...FINAL_SOURCES), how: fc.constantFrom<Spelling>("plain", "double", "json"), to: fc.constantFrom<"dir" | "file" | "existing-dir">("dir", "dir", "file", "existing-dir") }),
      after: fc.option(fc.constantFrom(...AFTER_RUNS), { nil: undefined }),
      metadata: fc.subarray(METADATA),
      args: fc.record({ global: fc.boolean(), before: fc.subarray(ARGS, { maxLength: 3 }), late: fc.option(fc.constantFrom(...ARGS), { nil: undefined }) }),
      shell: fc.option(fc.record({ line: fc.constantFrom(...SHELLS), late: fc.boolean() }), { nil: undefined }),
    })
    .map((c) => {
      const lines: string[] = [];
      if (c.stage) {
        // A dependency stage: what it copies from the context is as "earlier" as the final stage's COPYs.
        lines.push(`FROM ${base} AS deps`, "WORKDIR /deps", `COPY ${spell([c.stage.source, "./"], c.stage.how)}`);
        lines.push("RUN (find . | sort; find . -type f | sort | xargs cat) > /deps.all 2>&1 || true");
      }
      if (c.args.global) lines.unshift("ARG FZ_GLOBAL=global");
      lines.push(`FROM ${base}`);
      lines.push(...c.args.before);
      if (c.shell && !c.shell.late) lines.push(c.shell.line);
      if (c.workdir) lines.push("WORKDIR /app");
      if (c.stage) lines.push("COPY --from=deps /deps.all /opt/stage.all");
      for (const e of c.earlier) lines.push(`COPY ${spell([e.source, "/opt/deps/"], e.how)}`);
      if (c.earlier.length > 0) lines.push("RUN (find /opt/deps | sort; find /opt/deps -type f | sort | xargs cat) > /deps.all 2>&1 || true");
      // Into a directory ("/"), to a path of its own (a file, or a directory named so), into a directory of the base image.
      const dest = c.final.to === "file" ? "/app/copied.out" : c.final.to === "existing-dir" ? "/etc" : c.workdir ? "./" : "/app/";
      lines.push(`COPY ${spell([c.final.source, dest], c.final.how)}`);
      if (c.args.late) lines.push(c.args.late);
      if (c.shell?.late) lines.push(c.shell.line);
      if (c.after) lines.push(c.after);
      lines.push(...c.metadata);
      return `${lines.join("\n")}\n`;
    });

const fileOrLink = fc.oneof(
  { weight: 4, arbitrary: fc.string({ minLength: 1, maxLength: 12, unit: "grapheme-ascii" }).map((s) => `${s}\n`) },
  { weight: 1, arbitrary: fc.constantFrom(...LINK_TARGETS).map((t) => ({ symlink: t })) },
  { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 8, unit: "grapheme-ascii" }).map((s) => ({ content: `#!/bin/sh\n${s}\n`, mode: 0o755 })) },
);

const change: fc.Arbitrary<Files> = fc.oneof(
  { weight: 5, arbitrary: fc.dictionary(fc.constantFrom(...PATHS), fileOrLink, { minKeys: 1, maxKeys: 2 }) },
  { weight: 2, arbitrary: fc.constantFrom(...PATHS).map((p): Files => ({ [p]: null })) },
  { weight: 1, arbitrary: fc.constantFrom(...PATHS).chain((p) => fc.constantFrom(...PATHS).map((q): Files => (p === q ? { [p]: null } : { [p]: null, [q]: `renamed from ${p}\n` }))) },
  { weight: 1, arbitrary: fc.constantFrom("*.md\n", "src/*.log\n", "*.md\nlib/b.txt\n", "").map((t): Files => ({ ".containerignore": t })) },
  { weight: 1, arbitrary: fc.constantFrom("*.txt text eol=crlf\n", "lib/* -text\n").map((t): Files => ({ ".gitattributes": t })) },
);

// A file an earlier COPY reads changes, then a source only: the fast path starts from the earlier
// COPY, then from the final one on the snapshots of the steps it ran below it (a RUN after it).
const EARLIER_EDIT = fc.constantFrom("deps.txt", "lib/a.txt", "libextra.txt", "conf.d/x.conf").map((p): Files => ({ [p]: `${p} edited\n` }));
const SOURCE_EDIT = fc.constantFrom(...SOURCE_PATHS).map((p): Files => ({ [p]: `${p} edited after the earlier file\n` }));
const commitsArb = fc.oneof(
  { weight: 2, arbitrary: fc.array(change, { minLength: 2, maxLength: 4 }) },
  { weight: 1, arbitrary: fc.tuple(EARLIER_EDIT, SOURCE_EDIT, fc.array(change, { maxLength: 2 }), SOURCE_EDIT).map(([e, s, more, last]) => [e, s, ...more, last]) },
);

/** stages: false gives single-stage Containerfiles only (what kiln's first build takes). */
export const scenarioArb = (base: string, o: { stages?: boolean } = {}): fc.Arbitrary<Scenario> =>
  fc
    .record({
      layout: fc.constantFrom(".", "./", "app", "./app/", "applink"),
      containerfile: containerfileArb(base, o.stages ?? true),
      buildArgs: fc.constantFrom(...BUILD_ARGS),
      links: fc.subarray(["deps-link", "conf-link", "src-file-link", "src-dir-link", "dangling", "outside"]),
      ignore: fc.constantFrom("", "*.md\n", "src/*.log\n"),
      commits: commitsArb,
    })
    .map((r) => {
      const dir = r.layout === "." || r.layout === "./" ? "" : "app";
      const app: Files = {
        Containerfile: r.containerfile,
        "deps.txt": "left-pad 1\n",
        "lib/a.txt": "lib a\n",
        "lib/b.txt": "lib b\n",
        "libextra.txt": "extra\n",
        "conf.d/x.conf": "x=1\n",
        "src/a.txt": "hello\n",
        "src/sub/b.txt": "b\n",
        "README.md": "# fuzz\n",
      };
      if (r.ignore) app[".containerignore"] = r.ignore;
      if (r.links.includes("deps-link")) app["deps.txt"] = { symlink: "lib/a.txt" };
      if (r.links.includes("conf-link")) {
        delete app["conf.d/x.conf"];
        app["lib/x.conf"] = "x=1 (through conf.d)\n";
        app["conf.d"] = { symlink: "lib" };
      }
      if (r.links.includes("src-file-link")) app["src/link.txt"] = { symlink: "a.txt" };
      if (r.links.includes("src-dir-link")) app["src/dirlink"] = { symlink: "sub" };
      if (r.links.includes("dangling")) app["src/broken"] = { symlink: "missing" };
      if (r.links.includes("outside")) app["src/out"] = { symlink: "../README.md" };
      const prefix = (files: Files): Files => (dir ? Object.fromEntries(Object.entries(files).map(([p, f]) => [`${dir}/${p}`, f])) : files);
      const files = prefix(app);
      if (dir) {
        files["ROOT.md"] = "outside the context\n";
        files.applink = { symlink: "app" };
      }
      // A change outside the context now and then, beside the app's own.
      const commits = r.commits.map((c, i) => (dir && i % 2 === 1 ? { ...prefix(c), "ROOT.md": `edit ${i}\n` } : prefix(c)));
      return { dir, context: r.layout, containerfile: r.containerfile, buildArgs: r.buildArgs, files, commits };
    });
