// Which Containerfiles kiln's fast path can take, read conservatively: a final stage whose last
// COPY from the build context is followed only by plain RUN steps (kiln runs them itself,
// run-steps.ts) and metadata steps. Earlier stages and the final stage's earlier steps are reused
// as they are, so everything they read from the context is "earlier" (changes.ts checks no
// changed file reaches it). Anything the fast path could get wrong (ADD, globs or variables in
// the final COPY, context bind mounts in RUN, COPY --from an image rather than a stage, parser
// directives, heredocs, a RUN with flags other than cache and secret mounts, a SHELL in an
// OCI-format build, VOLUME or WORKDIR among the steps kiln runs, an ARG it cannot follow:
// build-args.ts) makes it step aside.
import { posix } from "node:path";
import { DockerfileParser, type Instruction } from "dockerfile-ast";
import { createArgScope } from "./build-args.js";
import { copyWords } from "./words.js";

/** A RUN after the COPY kiln starts from, as kiln runs it, with what the steps between set. */
export interface RunStep {
  /** The command as written, for the shell (line continuations joined, as buildah joins them). */
  command: string;
  /** Exec form (`RUN ["cmd", "arg"]`): the arguments, run without a shell. */
  exec?: string[];
  /** A SHELL set after the COPY kiln starts from and before this RUN (else the parent image's, else /bin/sh -c). */
  shell?: string[];
  /** ENV set after the COPY kiln starts from and before this RUN, in order (the parent image has the rest). */
  env: [string, string][];
  /** USER set after that COPY and before this RUN (else the parent image's). */
  user?: string;
  /** The ARG values this RUN sees (build-args.ts), by name; an ENV of the same name wins. */
  args: [string, string][];
  /** Its --mount=type=cache mounts (buildah's: a directory of the shared cache-mount directory). */
  cache: CacheMount[];
  /** Its --mount=type=secret mounts of the request's secrets (read from the Containerfile as kiln rewrote it: secrets/secret-mounts.ts). */
  secrets: SecretMount[];
  /** The step as buildah writes it in the image's history, without the ARG values it writes before it (runHistory). */
  history: string;
}

/**
 * RUN --mount=type=cache as buildah 1.28 makes it: the directory <cache-mount dir>/<id, else
 * the target>, created with mode, uid and gid when missing, bound read-write at the target;
 * sharing=locked holds buildah's lock file in it while the step runs.
 */
export interface CacheMount {
  target: string;
  /** Relative to the cache-mount directory (no ".."). */
  source: string;
  locked: boolean;
  mode: number;
  uid: number;
  gid: number;
}

/**
 * RUN --mount=type=secret as buildah 1.28 makes it: the secret's value copied to a file with
 * mode (0400 unless given), uid and gid, bound read-only at the target (/run/secrets/<id> unless
 * given). kiln's rewrite names the secret `<id>.kiln-<digest>` and writes the target out.
 */
export interface SecretMount {
  /** The request's secret id. */
  id: string;
  target: string;
  mode: number;
  uid: number;
  gid: number;
}

/** A plain COPY from the context after the one kiln starts from (kiln makes its layer too). */
export interface CopyStep {
  /** chown: its --chown value as written (the owner is learned from the last full build's layer). */
  copy: { sources: string[]; dest: string; chown?: string };
}

/** A step after the COPY kiln starts from that makes a layer: a RUN kiln runs, or a COPY kiln makes. */
export type AfterStep = RunStep | CopyStep;

export const isCopyStep = (s: AfterStep): s is CopyStep => "copy" in s;

export interface CopyPlan {
  /** The final COPY's sources, relative to the context ("" is the whole context). */
  sources: string[];
  /** Its destination as written; relative ones are resolved against the image's WorkingDir. */
  dest: string;
  /** --chown was given: the owner is learned from the last full build's layer. */
  chown: boolean;
  /** Sources of every earlier COPY from the context, relative to it (globs kept). */
  earlier: string[];
  /** Steps after FROM, and how many come before the final COPY (reused as they are). */
  steps: { total: number; reused: number };
  /** ONBUILD instructions of this Containerfile (any more in the image's history are the base's triggers). */
  onbuild: number;
  /** The steps with layers after this COPY: RUN steps kiln runs, context COPYs kiln makes (none: the COPY's layer is the last). */
  after: AfterStep[];
  /** The COPY's step in buildah's numbering of the final stage (FROM is step 1). */
  copyStep: number;
}

export type PlanResult = { ok: true; plan: CopyPlan } | { ok: false; reason: string };

/**
 * What every step of the build reads from the context, for the build whose inputs did not
 * change: when no changed file is among these, buildah would take every step from its cache,
 * and the image is the last full build's with kiln's new labels.
 */
export interface ReadsPlan {
  /** Every COPY source from the context (the ignore file applies). */
  reads: string[];
  /** Every RUN bind mount of the context ("" is all of it): buildah mounts the directory as it is, ignored files too. */
  mounts: string[];
  /** Steps after FROM in the stages built. */
  steps: number;
  onbuild: number;
}

export type ReadsResult = { ok: true; plan: ReadsPlan } | { ok: false; reason: string };

const METADATA = new Set(["ENV", "EXPOSE", "USER", "CMD", "ENTRYPOINT", "LABEL", "STOPSIGNAL", "HEALTHCHECK", "VOLUME", "SHELL", "MAINTAINER", "ARG", "ONBUILD"]);
const GLOB = /[*?[\\]/;

const no = (reason: string): { ok: false; reason: string } => ({ ok: false, reason });

/** How many COPYs from the context the final stage has: planFastPath may start from any of them. */
export function contextCopies(text: string): number {
  const file = DockerfileParser.parse(text);
  const finalFrom = file.getFROMs().at(-1);
  if (!finalFrom) return 0;
  const all = file.getInstructions();
  return all.slice(all.indexOf(finalFrom) + 1).filter((i) => i.getKeyword() === "COPY" && !flags(i).some(([k]) => k === "from")).length;
}

export interface PlanOptions {
  /** The request's build args. */
  buildArgs?: Record<string, string>;
  /** A Docker-format build (buildah honours SHELL only in those). */
  docker?: boolean;
}

/**
 * The plan that starts from the final stage's COPY from the context number `entry` (0-based;
 * the last one when undefined): that COPY's layer, then every step after it with a layer (plain
 * or cache-mount RUN steps, plain context COPYs) made by kiln; every step before it is reused.
 */
export function planFastPath(text: string, target: string | undefined, entry?: number, o: PlanOptions = {}): PlanResult {
  const buildArgs = o.buildArgs ?? {};
  if (/^\s*#\s*escape\s*=/im.test(text)) return no("the Containerfile sets an escape directive");
  const file = DockerfileParser.parse(text);
  const froms = file.getFROMs();
  if (froms.length === 0) return no("the Containerfile has no FROM");
  const finalFrom = froms.at(-1)!;
  if (target && finalFrom.getBuildStage()?.toLowerCase() !== target.toLowerCase()) return no(`--target ${target} is not the last stage`);
  const all = file.getInstructions();
  if (all.some((i) => i.getArgumentsContent()?.includes("<<"))) return no("the Containerfile uses a heredoc");
  // Earlier stages: everything they do is reused as it is, so it counts as "earlier" like the
  // final stage's steps before its last COPY. Their names are what COPY --from may name.
  const stageNames = new Set(froms.slice(0, -1).flatMap((f, n) => [String(n), ...(f.getBuildStage() ? [f.getBuildStage()!.toLowerCase()] : [])]));
  const stageSteps = all.slice(all.indexOf(froms[0]!)).filter((i, n, xs) => i.getKeyword() !== "FROM" && xs.indexOf(finalFrom) > n);
  const steps = all.slice(all.indexOf(finalFrom) + 1);

  // The COPY kiln starts from (by default the final one: the last from the context). After it,
  // RUN steps and context COPYs (kiln runs and makes them), metadata steps, and a WORKDIR when
  // nothing after it writes (below).
  const copies = steps.flatMap((i, n) => (i.getKeyword() === "COPY" && !flags(i).some(([k]) => k === "from") ? [n] : []));
  const last = (entry === undefined ? copies.at(-1) : copies[entry]) ?? -1;
  const copy = steps[last];
  if (!copy) return no("the final stage has no COPY from the context");
  const trailingWorkdirs: string[] = [];
  const after: AfterStep[] = [];
  const env: [string, string][] = [];
  let user: string | undefined;
  let shell: string[] | undefined;
  const tail = steps.slice(last + 1);
  const runs = tail.some((i) => i.getKeyword() === "RUN");
  const writes = tail.some((i) => i.getKeyword() === "RUN" || i.getKeyword() === "COPY");
  const where = entry === undefined ? "the final COPY" : "the COPY kiln starts from";
  // buildah runs a shell-form RUN with the stage's SHELL only in Docker-format builds; kiln takes a SHELL in those alone.
  if (runs && !o.docker && steps.some((i) => i.getKeyword() === "SHELL")) return no(`the final stage sets a SHELL and has RUN steps after ${where} (an OCI-format build)`);
  // buildah gives a RUN step the values of the stage's ARGs as environment variables, and writes them in its history.
  const args = createArgScope(
    all.slice(0, all.indexOf(froms[0]!)).filter((i) => i.getKeyword() === "ARG"),
    buildArgs,
  );
  if (runs && typeof args === "string") return no(args);
  for (const i of steps.slice(0, last)) {
    const why = runs && typeof args !== "string" && i.getKeyword() === "ARG" ? args.declare(i) : undefined;
    if (why) return no(why);
  }
  for (const i of tail) {
    const kw = i.getKeyword();
    const raw = i.getRawArgumentsContent?.() ?? i.getArgumentsContent() ?? "";
    if (kw === "RUN") {
      const cache: CacheMount[] = [];
      const secrets: SecretMount[] = [];
      for (const [k, v] of flags(i)) {
        if (k === "mount" && /(^|,)type=secret(,|$)/.test(v)) {
          const s = secretMount(v);
          if (typeof s === "string") return no(`a RUN after ${where} has ${s}`);
          // A secret the request does not give and the step does not require: buildah mounts nothing.
          if (s) secrets.push(s);
          continue;
        }
        const m = k === "mount" ? cacheMount(v) : `--${k}`;
        if (typeof m === "string") return no(`a RUN after ${where} has ${m}`);
        cache.push(m);
      }
      const command = (i.getArgumentsContent() ?? "").trim();
      let exec: string[] | undefined;
      if (command.startsWith("[")) {
        exec = jsonWords(command);
        if (!exec) return no(`a RUN after ${where} starts with [ but is not a JSON array of strings`);
      }
      if (command === "") return no(`a RUN after ${where} has no command`);
      const history = `/bin/sh -c ${[...flags(i).map(([k, v]) => `--${k}=${v}`), command].join(" ")}`;
      after.push({ command, ...(exec ? { exec } : {}), ...(shell && !exec ? { shell } : {}), env: [...env], ...(user !== undefined ? { user } : {}), args: typeof args === "string" ? [] : args.active(), cache, secrets, history });
    } else if (kw === "WORKDIR") {
      if (writes) return no(`a WORKDIR among the steps after ${where}`);
      trailingWorkdirs.push((i.getArgumentsContent() ?? "").trim());
    } else if (kw === "COPY") {
      const f = flags(i);
      if (f.some(([k]) => k === "from")) return no(`COPY --from after ${where}`);
      const other = f.find(([k]) => k !== "chown");
      if (other) return no(`a COPY after ${where} has --${other[0]}`);
      const c = plainCopy(i, `a COPY after ${where}`);
      if (typeof c === "string") return no(c);
      const chown = f.find(([k]) => k === "chown")?.[1];
      if (chown !== undefined && /[$\\]/.test(chown)) return no(`a COPY after ${where} has a --chown with a variable or an escape`);
      after.push({ copy: { ...c, ...(chown !== undefined ? { chown } : {}) } });
    } else if (kw === "ADD") {
      return no(`ADD after ${where}`);
    } else if (kw === "ARG") {
      const why = runs && typeof args !== "string" ? args.declare(i) : undefined;
      if (why) return no(`${why} among the steps after ${where}`);
    } else if (kw === "SHELL" && runs) {
      shell = jsonWords((i.getArgumentsContent() ?? "").trim());
      if (!shell) return no(`a SHELL after ${where} is not a JSON array of strings`);
    } else if (runs && kw === "ONBUILD") {
      return no(`${kw} among the RUN steps after ${where}`);
    } else if (writes && kw === "VOLUME") {
      return no(`VOLUME among the steps after ${where}`);
    } else if (runs && (kw === "ENV" || kw === "USER") && /[$\\]/.test(raw)) {
      return no(`${kw} after ${where} uses a variable or an escape`);
    } else if (kw === "ENV") {
      const props = (i as Instruction & { getProperties(): { getName(): string; getValue(): string | null }[] }).getProperties();
      for (const p of props) env.push([p.getName(), p.getValue() ?? ""]);
    } else if (kw === "USER") {
      user = (i.getArgumentsContent() ?? "").trim();
    } else if (!METADATA.has(kw)) {
      return no(`${kw} after ${where}`);
    }
  }

  const earlier: string[] = [];
  for (const i of [...stageSteps, ...steps.slice(0, last)]) {
    const kw = i.getKeyword();
    if (kw === "ADD") return no("the Containerfile uses ADD");
    const mounts = flags(i).filter(([k, v]) => k === "mount" && /(^|,)type=bind(,|$)/.test(v));
    if (kw === "RUN" && mounts.some(([, v]) => !/(^|,)from=/.test(v))) return no("a RUN step bind-mounts the context");
    const fromOf = (v: string) => /(?:^|,)from=([^,]+)/.exec(v)?.[1]?.toLowerCase() ?? "";
    if (kw === "RUN" && mounts.some(([, v]) => !stageNames.has(fromOf(v)))) return no("a RUN step mounts an image kiln does not look up");
    const copyFrom = flags(i).find(([k]) => k === "from");
    // An image named by COPY --from is not looked up like a FROM: it could have moved.
    if (kw === "COPY" && copyFrom && !stageNames.has(copyFrom[1].toLowerCase())) return no(`COPY --from=${copyFrom[1]} names an image, not an earlier stage`);
    if (kw === "COPY" && !copyFrom) {
      const w = copyWords(i.getArgumentsContent() ?? "");
      if (!w.ok) return no(`an earlier COPY: ${w.reason}`);
      if (w.words.length < 2) return no("an earlier COPY has no destination");
      earlier.push(...w.words.slice(0, -1).map(contextPath));
    }
  }

  const f = flags(copy);
  const unknown = f.find(([k]) => k !== "chown");
  if (unknown) return no(`${where} has --${unknown[0]}`);
  const c = plainCopy(copy, where);
  if (typeof c === "string") return no(c);
  const { sources: normalized, dest } = c;
  // WORKDIR creates its directory when it is missing. One that names the COPY's destination or a
  // directory above it finds it there whatever the commit holds; anything else could write.
  // (The destination must then be absolute: the working directory the COPY saw is not the final one.)
  if (trailingWorkdirs.length > 0) {
    if (!dest.startsWith("/")) return no("a WORKDIR after the final COPY, whose destination is relative");
    const destDir = posix.normalize(dest.endsWith("/") || normalized.length > 1 || normalized.includes("") ? dest : posix.dirname(dest)).replace(/\/+$/, "") || "/";
    for (const w of trailingWorkdirs) {
      const abs = posix.normalize(w).replace(/\/+$/, "") || "/";
      if (!w.startsWith("/") || /[$"'\\]/.test(w)) return no(`WORKDIR ${w} after the final COPY is not an absolute plain path`);
      if (!(destDir === abs || destDir.startsWith(abs === "/" ? "/" : `${abs}/`))) return no(`WORKDIR ${w} after the final COPY is not the COPY's destination or above it`);
    }
  }
  const onbuild = [...stageSteps, ...steps].filter((i) => i.getKeyword() === "ONBUILD").length;
  const before = stageSteps.length;
  return { ok: true, plan: { sources: normalized, dest, chown: f.length > 0, earlier, steps: { total: before + steps.length, reused: before + last }, onbuild, after, copyStep: last + 2 } };
}

/**
 * An earlier stage kiln rebuilds itself, and the final stage's one COPY --from it: S's last COPY
 * from the context and the plain RUN steps after it (as planFastPath takes a final stage), then
 * the final stage's last step that writes files, `COPY --from=S <paths> <dest>`, followed by
 * metadata only. Nothing else may use S (no other COPY --from, FROM or mount of it), so the only
 * layer of the image that changes is that COPY's.
 */
export interface StagePlan {
  /** S's part, planned as if S were the last stage (its final COPY, its RUN steps, its copyStep). */
  stage: CopyPlan;
  /** S's number (0-based, as buildah's "[n/m]" minus one). */
  stageIndex: number;
  /** The final stage's COPY --from: sources are absolute paths in S; reads of every other step are earlier. */
  copy: CopyPlan;
}

export type StagePlanResult = { ok: true; plan: StagePlan } | { ok: false; reason: string };

export function planStageCopy(text: string, target: string | undefined, o: PlanOptions = {}): StagePlanResult {
  if (/^\s*#\s*escape\s*=/im.test(text)) return no("the Containerfile sets an escape directive");
  const file = DockerfileParser.parse(text);
  const froms = file.getFROMs();
  if (froms.length < 2) return no("one stage");
  const finalFrom = froms.at(-1)!;
  if (target && finalFrom.getBuildStage()?.toLowerCase() !== target.toLowerCase()) return no(`--target ${target} is not the last stage`);
  const all = file.getInstructions();
  if (all.some((i) => i.getArgumentsContent()?.includes("<<"))) return no("the Containerfile uses a heredoc");
  const steps = all.slice(all.indexOf(finalFrom) + 1);
  const last = steps.findLastIndex((i) => !METADATA.has(i.getKeyword()));
  const copy = steps[last];
  const from = copy ? flags(copy).find(([k]) => k === "from")?.[1]?.toLowerCase() : undefined;
  if (!copy || copy.getKeyword() !== "COPY" || from === undefined) return no("the final stage's last step that writes files is not a COPY --from a stage");
  const unknown = flags(copy).find(([k]) => k !== "from");
  if (unknown) return no(`the final COPY --from has --${unknown[0]}`);
  const stageIndex = froms.findIndex((f, n) => n < froms.length - 1 && (String(n) === from || f.getBuildStage()?.toLowerCase() === from));
  if (stageIndex < 0) return no(`COPY --from=${from} names no earlier stage`);
  const names = new Set([String(stageIndex), ...(froms[stageIndex]!.getBuildStage() ? [froms[stageIndex]!.getBuildStage()!.toLowerCase()] : [])]);
  // S is used by that COPY alone.
  for (const i of all) {
    if (i === copy) continue;
    const f = flags(i);
    const uses =
      (i.getKeyword() === "FROM" && names.has((i.getArgumentsContent() ?? "").trim().split(/\s+/)[0]!.toLowerCase())) ||
      f.some(([k, v]) => (k === "from" && names.has(v.toLowerCase())) || (k === "mount" && [...names].some((n) => new RegExp(`(^|,)from=${n}(,|$)`, "i").test(v))));
    if (uses) return no(`stage ${from} is used by more than the final COPY --from`);
  }
  const w = copyWords(copy.getArgumentsContent() ?? "");
  if (!w.ok) return no(`the final COPY --from: ${w.reason}`);
  if (w.words.length < 2) return no("the final COPY --from has no destination");
  const sources = w.words.slice(0, -1);
  const dest = w.words.at(-1)!;
  if (sources.some((x) => GLOB.test(x) || !x.startsWith("/") || posix.normalize(x) === "/")) return no("the final COPY --from has a glob, a relative source or /");
  if (sources.length > 1 && !dest.endsWith("/")) return no("the final COPY --from has several sources and a destination without a trailing /");
  const lines = text.split("\n");
  // S planned as the last stage of the Containerfile cut after it.
  const next = froms[stageIndex + 1]!.getRange().start.line;
  const stage = planFastPath(lines.slice(0, next).join("\n"), undefined, undefined, o);
  if (!stage.ok) return no(`stage ${from}: ${stage.reason}`);
  // Everything else every built stage reads: the whole Containerfile without S's final COPY.
  const sCopy = all.filter((i) => i.getKeyword() === "COPY" && i.getRange().start.line < next && !flags(i).some(([k]) => k === "from")).at(-1)!;
  const { start, end } = sCopy.getRange();
  const without = lines.map((l, n) => (n >= start.line && n <= end.line ? "" : l)).join("\n");
  const reads = planReads(without, target);
  if (!reads.ok) return no(reads.reason);
  if (reads.plan.mounts.length > 0) return no("a RUN step bind-mounts the context");
  const total = reads.plan.steps + 1;
  const rerun = 1 + stage.plan.after.length + 1;
  return {
    ok: true,
    plan: {
      stage: stage.plan,
      stageIndex,
      copy: {
        sources: sources.map((x) => posix.normalize(x).replace(/^\/+/, "").replace(/\/+$/, "")),
        dest,
        chown: false,
        earlier: reads.plan.reads,
        steps: { total, reused: total - rerun },
        onbuild: reads.plan.onbuild,
        after: [],
        copyStep: last + 2,
      },
    },
  };
}

/**
 * Any Containerfile whose reads of the context kiln can list: every stage up to the target, each
 * COPY from the context (its sources), each RUN that bind-mounts the context (all of it), and
 * nothing it cannot look up (ADD, an image named by COPY --from or a mount's from=).
 */
export function planReads(text: string, target: string | undefined): ReadsResult {
  if (/^\s*#\s*escape\s*=/im.test(text)) return no("the Containerfile sets an escape directive");
  const file = DockerfileParser.parse(text);
  const froms = file.getFROMs();
  if (froms.length === 0) return no("the Containerfile has no FROM");
  const last = target ? froms.findIndex((f) => f.getBuildStage()?.toLowerCase() === target.toLowerCase()) : froms.length - 1;
  if (last < 0) return no(`--target ${target} names no stage`);
  const all = file.getInstructions();
  const end = last + 1 < froms.length ? all.indexOf(froms[last + 1]!) : all.length;
  const built = all.slice(all.indexOf(froms[0]!), end);
  if (built.some((i) => i.getArgumentsContent()?.includes("<<"))) return no("the Containerfile uses a heredoc");
  const reads: string[] = [];
  const mounts: string[] = [];
  const stages = new Set<string>();
  let stage = -1;
  for (const i of built) {
    const kw = i.getKeyword();
    if (kw === "FROM") {
      // What a later step may name: the stages declared so far (by index and by name).
      if (stage >= 0) {
        stages.add(String(stage));
        const name = froms[stage]!.getBuildStage();
        if (name) stages.add(name.toLowerCase());
      }
      stage++;
      continue;
    }
    if (kw === "ADD") return no("the Containerfile uses ADD");
    const fl = flags(i);
    const fromOf = (v: string) => /(?:^|,)from=([^,]+)/.exec(v)?.[1]?.toLowerCase();
    if (kw === "RUN") {
      for (const [k, v] of fl) {
        if (k !== "mount") continue;
        const from = fromOf(v);
        if (from !== undefined && !stages.has(from)) return no("a RUN step mounts an image kiln does not look up");
        if (/(^|,)type=bind(,|$)/.test(v) && from === undefined) mounts.push("");
      }
    }
    if (kw === "COPY") {
      const from = fl.find(([k]) => k === "from");
      if (from) {
        if (!stages.has(from[1].toLowerCase())) return no(`COPY --from=${from[1]} names an image, not an earlier stage`);
        continue;
      }
      const w = copyWords(i.getArgumentsContent() ?? "");
      if (!w.ok) return no(`a COPY: ${w.reason}`);
      if (w.words.length < 2) return no("a COPY has no destination");
      reads.push(...w.words.slice(0, -1).map(contextPath));
    }
  }
  const steps = built.filter((i) => i.getKeyword() !== "FROM").length;
  const onbuild = built.filter((i) => i.getKeyword() === "ONBUILD").length;
  return { ok: true, plan: { reads, mounts, steps, onbuild } };
}

/** A COPY from the context kiln can make: no glob or URL, inside the context, a trailing "/" for several sources. */
function plainCopy(i: Instruction, what: string): { sources: string[]; dest: string } | string {
  const w = copyWords(i.getArgumentsContent() ?? "");
  if (!w.ok) return `${what}: ${w.reason}`;
  if (w.words.length < 2) return `${what} has no destination`;
  const sources = w.words.slice(0, -1);
  if (sources.some((s) => GLOB.test(s) || /^[a-z]+:\/\//i.test(s))) return `${what} has a glob or a URL`;
  const normalized = sources.map(contextPath);
  if (normalized.some((s) => s.startsWith("../") || s === "..")) return `${what} reaches outside the context`;
  const dest = w.words.at(-1)!;
  if (sources.length > 1 && !dest.endsWith("/")) return `${what} has several sources and a destination without a trailing /`;
  return { sources: normalized, dest };
}

/** A --mount of a RUN kiln runs: type=cache with the options buildah 1.28 knows, else what kiln does not take. */
function cacheMount(value: string): CacheMount | string {
  const m = { locked: false, mode: 0o755, uid: 0, gid: 0 };
  let type = "bind";
  let target: string | undefined;
  let id: string | undefined;
  for (const kv of value.split(",")) {
    const at = kv.indexOf("=");
    const [k, v] = at < 0 ? [kv, undefined] : [kv.slice(0, at), kv.slice(at + 1)];
    if (k === "type" && v !== undefined) type = v;
    else if ((k === "target" || k === "dst" || k === "destination") && v) target = v;
    // buildah expands variables in a --mount flag (the stage's ARGs and ENV): kiln does not.
    else if (k === "id" && v && !/[$\\]/.test(v)) id = v;
    else if (k === "sharing" && (v === "locked" || v === "shared")) m.locked = v === "locked";
    else if (k === "mode" && v && /^[0-7]{1,4}$/.test(v)) m.mode = parseInt(v, 8);
    else if ((k === "uid" || k === "gid") && v && /^\d{1,9}$/.test(v)) m[k] = Number(v);
    else return `a --mount option kiln does not take (${k})`;
  }
  if (type !== "cache") return `a --mount=type=${type}`;
  if (!target || !target.startsWith("/") || posix.normalize(target) === "/" || /[$\\]/.test(target)) return "a cache mount whose target is not an absolute plain path";
  // buildah: <cache dir>/<id, else the target>, both cleaned; nothing may lead out of it.
  const source = posix.normalize(`/${id ?? target}`).replace(/^\/+/, "").replace(/\/+$/, "");
  if (source === "" || (id !== undefined && posix.normalize(id).split("/").includes(".."))) return "a cache mount whose id leads out of the cache directory";
  return { target: posix.normalize(target).replace(/\/+$/, ""), source, ...m };
}

/** A secret mount as kiln's rewrite left it (id=<id>.kiln-<digest>, the target written out); undefined: buildah mounts nothing. */
function secretMount(value: string): SecretMount | undefined | string {
  const m = { mode: 0o400, uid: 0, gid: 0 };
  let id: string | undefined;
  let target: string | undefined;
  let required = false;
  for (const kv of value.split(",")) {
    const at = kv.indexOf("=");
    const [k, v] = at < 0 ? [kv, undefined] : [kv.slice(0, at), kv.slice(at + 1)];
    if (k === "type") continue;
    else if (k === "id" && v) id = v;
    else if ((k === "target" || k === "dst" || k === "destination") && v) target = v;
    else if (k === "required" && (v === "true" || v === "false")) required = v === "true";
    else if (k === "mode" && v && /^[0-7]{1,4}$/.test(v)) m.mode = parseInt(v, 8);
    else if ((k === "uid" || k === "gid") && v && /^\d{1,9}$/.test(v)) m[k] = Number(v);
    else return `a secret --mount option kiln does not take (${k})`;
  }
  const renamed = id === undefined ? undefined : /^(.+)\.kiln-[0-9a-f]+$/.exec(id)?.[1];
  if (renamed === undefined) return required ? "a required secret mount of a secret the request does not give" : undefined;
  if (!target || !target.startsWith("/") || posix.normalize(target) === "/" || /[$\\]/.test(target)) return "a secret mount whose target is not an absolute plain path";
  return { id: renamed, target: posix.normalize(target).replace(/\/+$/, ""), ...m };
}

/** A JSON array of strings, as Docker's parser reads the exec form (else undefined: kiln does not guess). */
function jsonWords(text: string): string[] | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return Array.isArray(v) && v.length > 0 && v.every((w) => typeof w === "string") ? (v as string[]) : undefined;
  } catch {
    return undefined;
  }
}

function contextPath(source: string): string {
  const p = posix.normalize(`./${source}`).replace(/^\/+/, "").replace(/\/+$/, "");
  return p === "." ? "" : p;
}

function flags(i: Instruction): [string, string][] {
  const withFlags = i as Instruction & { getFlags?: () => { getName(): string; getValue(): string | null }[] };
  return (withFlags.getFlags?.() ?? []).map((f) => [f.getName().toLowerCase(), f.getValue() ?? ""]);
}
