// ARG as buildah 1.28 (openshift/imagebuilder's Builder) resolves it for a RUN step, so that kiln
// runs a RUN with the environment buildah gives it and reads its history line the same way.
// Each stage starts from the request's build args (all of them, declared or not) and allows only
// the names an ARG of the stage declared so far; an ARG with a default sets it unless a build arg
// did; one without takes the value of a global ARG (before the first FROM) of that name. A RUN
// then sees every allowed name that has a value (an ENV of the same name wins), and buildah's
// history writes them before the command: `|2 A=1 B=2 /bin/sh -c make` (sorted as Go sorts
// strings; an ENV's value in place of the ARG's). What kiln cannot be sure of it refuses:
// expansions and quotes in an ARG, the platform names buildah fills in itself, and the proxy
// names buildah allows without an ARG and keeps out of the history.
import type { Instruction } from "dockerfile-ast";
import { envMap } from "./run-spec.js";

/** The names buildah gives a value of its own when an ARG declares them without one. */
const PLATFORM = new Set(["TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT"]);
const PROXY = /^(https?|ftp|no|all)_proxy$/i;
const PLAIN_WORD = /^[^$\\"'`]+$/;

export interface ArgScope {
  /** Applies one ARG instruction of the stage; a reason when kiln cannot follow it. */
  declare(i: Instruction): string | undefined;
  /** What a RUN here sees: every allowed name with a value, by name. */
  active(): [string, string][];
}

type Word = { name: string; value?: string };

function words(i: Instruction): Word[] | string {
  const text = (i.getArgumentsContent() ?? "").trim();
  if (text === "") return "an ARG without a name";
  const out: Word[] = [];
  for (const w of text.split(/\s+/)) {
    if (!PLAIN_WORD.test(w)) return `ARG ${w.slice(0, 40)} has a variable, a quote or an escape`;
    const eq = w.indexOf("=");
    const name = eq < 0 ? w : w.slice(0, eq);
    if (PLATFORM.has(name)) return `ARG ${name} (buildah gives it the platform's value)`;
    if (PROXY.test(name)) return `ARG ${name} (buildah treats proxy args apart)`;
    out.push(eq < 0 ? { name } : { name, value: w.slice(eq + 1) });
  }
  return out;
}

/**
 * The scope of one stage: `heading` are the ARG instructions before the first FROM, `user` the
 * request's build args. A reason when kiln cannot follow a global ARG.
 */
export function createArgScope(heading: readonly Instruction[], user: Record<string, string>): ArgScope | string {
  const fromUser = new Map(Object.entries(user));
  // The global ARGs' values: build args first, then their defaults (imagebuilder evaluates them on a builder of their own).
  const global = new Map<string, string>();
  for (const i of heading) {
    const ws = words(i);
    if (typeof ws === "string") return ws;
    for (const w of ws) {
      if (fromUser.has(w.name)) global.set(w.name, fromUser.get(w.name)!);
      else if (w.value !== undefined) global.set(w.name, w.value);
    }
  }
  const values = new Map(fromUser);
  const allowed = new Set<string>();
  return {
    declare(i) {
      const ws = words(i);
      if (typeof ws === "string") return ws;
      for (const w of ws) {
        allowed.add(w.name);
        if (w.value === undefined && global.has(w.name)) values.set(w.name, global.get(w.name)!);
        if (w.value !== undefined && !fromUser.has(w.name)) values.set(w.name, w.value);
      }
      return undefined;
    },
    active() {
      return [...values].filter(([k]) => allowed.has(k)).sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    },
  };
}

/**
 * A RUN's history line as buildah writes it: `history` (`/bin/sh -c <the step as written>`),
 * after the ARG values it saw, where an ENV of the same name (`env`: the image's at that step)
 * gives its value instead.
 */
export function runHistory(history: string, args: readonly [string, string][], env: readonly string[]): string {
  if (args.length === 0) return history;
  const set = envMap(env);
  const shown = args.map(([k, v]) => `${k}=${set.has(k) ? set.get(k) : v}`).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const joined = shown.join(" ");
  // buildah counts the space-separated words, not the args (a value with a space counts twice).
  return `|${joined.split(" ").length} ${joined} ${history}`;
}
