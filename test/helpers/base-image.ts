// The tiny busybox base image that test apps build FROM, made without any outside registry and
// pushed to the test's registry, as a real user's base image would be. Its podman storage is
// shared by all test files, which run two at a time, so each build and push holds a lock (flock,
// let go when the process dies) and the shared config files are replaced by rename. Without
// them, podman read files another process was rewriting and lost tags another build had just
// set (all happened: a COPY of a half-written busybox, "runroot must be set", "image not known").
import { execFileSync } from "node:child_process";
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { kilndPodmanEnv } from "./leftovers.js";

const ROOT = join(tmpdir(), "kiln-test-base");
const CONTAINERFILE = new URL("../../containerfiles/busybox.Containerfile", import.meta.url).pathname;

const CTX = join(ROOT, "ctx");
const TAG = "localhost/kiln-test/busybox:1";

/** Runs commands one after the other under the lock; their error output is in the thrown error. */
function underLock(env: NodeJS.ProcessEnv, ...commands: string[][]): void {
  const quote = (arg: string) => `'${arg.replaceAll("'", `'\\''`)}'`;
  const script = commands.map((argv) => argv.map(quote).join(" ")).join(" && ");
  execFileSync("flock", [join(ROOT, "lock"), "sh", "-c", script], { env, stdio: ["ignore", "ignore", "pipe"] });
}

/** Writes a config file other processes' podman may be reading: by rename, so it is never seen half-written. */
function writeShared(file: string, text: string): void {
  writeFileSync(`${file}.${process.pid}`, text);
  renameSync(`${file}.${process.pid}`, file);
}

function env(registry: string): NodeJS.ProcessEnv {
  mkdirSync(ROOT, { recursive: true });
  writeShared(join(ROOT, "containers.conf"), '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\nevents_logger = "none"\n');
  writeShared(join(ROOT, "storage.conf"), `[storage]\ndriver = "overlay"\ngraphroot = "${ROOT}/storage"\nrunroot = "/run/kiln-test-base"\n`);
  // One file per registry: test processes running at once (two clones' suites) share the storage, not this.
  const registries = join(ROOT, `registries-${registry.replace(/[^0-9A-Za-z]/g, "_")}.conf`);
  writeShared(registries, `unqualified-search-registries = []\n[[registry]]\nlocation = "${registry}"\ninsecure = true\n`);
  return {
    ...process.env,
    CONTAINERS_CONF: join(ROOT, "containers.conf"),
    CONTAINERS_STORAGE_CONF: join(ROOT, "storage.conf"),
    CONTAINERS_REGISTRIES_CONF: registries,
  };
}

/** An auth file (containers-auth.json) for one registry, so no password is on a command line. */
export function writeAuthFile(file: string, registry: string, creds: { username: string; password: string }): string {
  writeFileSync(file, JSON.stringify({ auths: { [registry]: { auth: Buffer.from(`${creds.username}:${creds.password}`).toString("base64") } } }), { mode: 0o600 });
  return file;
}

/** Pushes the busybox base to the registry (with the credentials it asks for) as base/busybox:TAG and returns its reference. */
export function pushBusyboxBase(registry: string, creds?: { username: string; password: string }, tag = "1"): string {
  const e = env(registry);
  const ref = `${registry}/base/busybox:${tag}`;
  const auth = creds ? ["--authfile", writeAuthFile(join(ROOT, `auth-${registry.replace(/[^0-9A-Za-z]/g, "_")}.json`), registry, creds)] : [];
  const busybox = execFileSync("sh", ["-c", "command -v busybox"], { encoding: "utf8" }).trim();
  mkdirSync(CTX, { recursive: true });
  underLock(
    e,
    ["cp", busybox, join(CTX, "busybox")],
    ["cp", CONTAINERFILE, join(CTX, "Containerfile")],
    ["podman", "build", "-q", "--layers", "-t", TAG, CTX],
    ["podman", "push", "-q", ...auth, TAG, `docker://${ref}`],
  );
  return ref;
}

/** Pushes, under the same tag, a patched version of the base (a file /patched added): a base tag that moved. */
export function pushPatchedBase(ref: string, registry: string, note: string): void {
  const e = env(registry);
  const ctx = join(ROOT, `patched-${process.pid}`);
  mkdirSync(ctx, { recursive: true });
  writeFileSync(join(ctx, "Containerfile"), `FROM ${ref}\nRUN echo ${JSON.stringify(note)} > /patched\n`);
  underLock(e, ["podman", "build", "-q", "--pull=always", "--layers=false", "-t", ref, ctx], ["podman", "push", "-q", ref]);
}

/** A base image no kilnd's storage has yet (busybox with /patched holding the tag), pushed as base/busybox:TAG: a first build's. */
export function pushFreshBase(registry: string, tag: string): string {
  const ref = pushBusyboxBase(registry, undefined, tag);
  pushPatchedBase(ref, registry, tag);
  return ref;
}

/**
 * Puts a base into a kilnd's storage (podman pull there), as an earlier build of another project
 * would: builds on it are then full builds with buildah's layer cache, never kiln's first build
 * (fastpath/first-build.ts), for the tests that are about that cache.
 */
export function pullIntoKilnd(data: string, ref: string): void {
  execFileSync("podman", ["pull", "-q", "--tls-verify=false", ref], { env: kilndPodmanEnv(data), stdio: ["ignore", "ignore", "pipe"] });
}
