// The push of a full build: kiln's own push of the image in storage (builds/direct-push.ts) when
// it can make it, else podman push with a deadline that grows with the image, retried with
// backoff when the registry fails in a way that passes (5xx, a reset connection), never when it
// refuses (401/403) or does not answer at all: those end the build FAILED with a clear error.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { KilnError } from "../errors/kiln-error.js";
import type { Podman } from "../podman/podman.js";
import { RegistryAuthError } from "../registry/auth.js";
import { pushRefused, registryRefusal } from "../registry/refusal.js";
import { RegistryError } from "../registry/client.js";
import type { DirectPushInput } from "./direct-push.js";
import { StopSignal, type ActiveBuild } from "./active-build.js";
import { errorSummary } from "../process/exec.js";
import { buildExec } from "./exec.js";
import { LAYER_STORE_NOTICE } from "../images/layer-store.js";

export interface PushOptions {
  podman: Podman;
  env: Record<string, string>;
  registry: string;
  tag: string;
  insecure: boolean;
  format: "docker" | "oci";
  /** The deadline before the image's bytes are counted in. */
  timeoutSec: number;
}

/** The slowest a registry may take the bytes before a push counts as hung: 1 MiB/s. */
export const MIN_PUSH_RATE = 1024 * 1024;
const ATTEMPTS = 3;
const BACKOFF_MS = [1000, 3000];
// Failures that pass: the registry or the network in between, not the request.
const TRANSIENT = /\b50[0234]\b|Service Unavailable|Bad Gateway|Gateway Time-?out|Internal Server Error|connection reset|connection refused|broken pipe|i\/o timeout|unexpected EOF|TLS handshake timeout/i;

/** What kiln's own push needs beyond PushOptions; the build's signal and deadlines are added here. */
export type DirectPush = Omit<DirectPushInput, "signal" | "deadlineMs">;

/** One try of a push: the digest, or why it failed and whether trying again may help. */
type Attempt = { digest: string } | { why: string; transient: boolean };

/**
 * Pushes the image, kiln's own push when given one (podman's when that one cannot: the log says
 * why); resolves with the manifest digest. A failure that passes is tried again with backoff, up
 * to ATTEMPTS tries in all; a registry that refuses the credentials, or stops answering, ends the
 * build at once.
 */
export async function pushBuilt(a: ActiveBuild, o: PushOptions, direct: DirectPush | undefined): Promise<string> {
  let kilns = direct;
  for (let attempt = 1; ; attempt++) {
    const tried = attempt > 1 ? ` (attempt ${attempt} of ${ATTEMPTS})` : "";
    let r: Attempt | "refused";
    if (kilns) {
      r = await kilnsAttempt(a, o, kilns, tried);
      if (r === "refused") {
        kilns = undefined;
        attempt--;
        continue;
      }
    } else {
      r = await podmansAttempt(a, o, tried);
    }
    if ("digest" in r) return r.digest;
    if (attempt >= ATTEMPTS || !r.transient) throw new KilnError("unavailable", `${kilns ? "kiln's push" : "podman push"} to ${o.registry} failed${attempt > 1 ? ` ${attempt} times` : ""}: ${r.why}`);
    const wait = BACKOFF_MS[attempt - 1]!;
    a.say(`push: the registry failed (${r.why.slice(0, 200)}); trying again in ${wait / 1000} s`);
    await sleep(wait, a.abort.signal);
  }
}

/** kiln's push from storage; "refused" when it cannot make this one (podman's push takes over). */
async function kilnsAttempt(a: ActiveBuild, o: PushOptions, direct: DirectPush, tried: string): Promise<Attempt | "refused"> {
  a.say(`push: kiln's push of ${o.tag} from storage${tried}`);
  // Loaded on first use: not part of kilnd's start-up.
  const { pushStoredImage, DirectPushRefused, DirectPushTimedOut } = await import("./direct-push.js");
  try {
    const r = await pushStoredImage({ ...direct, signal: a.abort.signal, deadlineMs: (bytes) => pushDeadlineMs(o.timeoutSec, bytes) });
    a.say(`push: kiln's push is done (${r.uploaded === 0 ? "every layer was in the registry" : `${r.uploaded} layer${r.uploaded === 1 ? "" : "s"} compressed and uploaded${r.early > 0 ? ` (${r.early} while buildah ran)` : ""}, ${r.uploadedBytes} bytes`})`);
    return { digest: r.digest };
  } catch (e) {
    if (a.abort.signal.aborted) throw new StopSignal();
    if (e instanceof RegistryAuthError) throw pushRefused(o.registry, e.status, e.message);
    if (e instanceof DirectPushTimedOut) throw stoppedAnswering(o, e.ms, e.bytes);
    if (e instanceof KilnError) throw e;
    const why = e instanceof Error ? e.message : String(e);
    // The registry failing or the network in between: tried again. Anything else (an image kiln
    // cannot push itself, an answer it does not know, its own fault) is left to podman's push.
    if (e instanceof RegistryError && (TRANSIENT.test(why) || /fetch failed|timeout/i.test(why))) return { why, transient: true };
    a.say(`push: kiln's own push gave way to podman's: ${e instanceof DirectPushRefused || e instanceof RegistryError ? why : `kiln's fault: ${why}`}`);
    return "refused";
  }
}

/** podman push of the image, with a deadline that grows with it. */
async function podmansAttempt(a: ActiveBuild, o: PushOptions, tried: string): Promise<Attempt> {
  // A push that outlasts --push-timeout gets a second per MiB of its image more. The size is
  // asked of podman only then: a push that ends in time (nearly all) costs no extra podman call.
  let size = 0;
  const deadline = {
    ms: o.timeoutSec * 1000,
    extend: async () => {
      size ||= await o.podman.imageSize(o.tag);
      return (size / MIN_PUSH_RATE) * 1000;
    },
  };
  const digestFile = join(a.tmpDir, "digest");
  // The manifest the build's format calls for (v2s2 is Docker's schema 2).
  const args = ["push", "--digestfile", digestFile, "--format", o.format === "docker" ? "v2s2" : "oci"];
  if (o.insecure) args.push("--tls-verify=false");
  args.push("--", o.tag);
  a.say(`push: podman ${args.join(" ")}${tried}`);
  // A base layer from kiln's store, uploaded to a registry that lacks it, ends with the store's notice.
  const r = await buildExec(a, "podman", "podman", args, o.env, { deadline, hide: LAYER_STORE_NOTICE });
  if (r.timedOut) throw stoppedAnswering(o, pushDeadlineMs(o.timeoutSec, size), size);
  if (r.exitCode === 0) {
    const digest = await readFile(digestFile, "utf8").then((t) => t.trim(), () => "");
    if (digest) return { digest };
  }
  const refused = registryRefusal(r.stderrTail, "push", o.registry);
  if (refused) throw refused;
  return { why: errorSummary(r), transient: TRANSIENT.test(r.stderrTail.join("\n")) };
}

/** A push's deadline: --push-timeout, and a second per MiB of the image. */
export const pushDeadlineMs = (timeoutSec: number, bytes: number) => timeoutSec * 1000 + (bytes / MIN_PUSH_RATE) * 1000;

const stoppedAnswering = (o: PushOptions, ms: number, bytes: number) =>
  new KilnError("unavailable", `push to ${o.registry} did not finish within ${Math.round(ms / 1000)} s (${o.timeoutSec} s and a second per MiB of the ${(bytes / 1024 / 1024).toFixed(1)} MiB image): the registry stopped answering`);

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((res, rej) => {
    if (signal.aborted) return rej(new StopSignal());
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      res();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      rej(new StopSignal());
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
