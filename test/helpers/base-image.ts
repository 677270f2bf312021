// The tiny busybox base image that test apps build FROM, made without any outside registry and
// pushed to the test's registry, as a real user's base image would be. Its podman storage is
// shared by all test files (only the push is per registry).
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(tmpdir(), "kiln-test-base");
const CONTAINERFILE = new URL("../../containerfiles/busybox.Containerfile", import.meta.url).pathname;

function env(registry: string): NodeJS.ProcessEnv {
  mkdirSync(join(ROOT, "ctx"), { recursive: true });
  writeFileSync(join(ROOT, "containers.conf"), '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\nevents_logger = "none"\n');
  writeFileSync(join(ROOT, "storage.conf"), `[storage]\ndriver = "overlay"\ngraphroot = "${ROOT}/storage"\nrunroot = "/run/kiln-test-base"\n`);
  // One file per registry: test processes running at once (two clones' suites) share the storage, not this.
  const registries = join(ROOT, `registries-${registry.replace(/[^0-9A-Za-z]/g, "_")}.conf`);
  writeFileSync(registries, `unqualified-search-registries = []\n[[registry]]\nlocation = "${registry}"\ninsecure = true\n`);
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
  copyFileSync(execFileSync("sh", ["-c", "command -v busybox"], { encoding: "utf8" }).trim(), join(ROOT, "ctx", "busybox"));
  copyFileSync(CONTAINERFILE, join(ROOT, "ctx", "Containerfile"));
  execFileSync("podman", ["build", "-q", "--layers", "-t", "localhost/kiln-test/busybox:1", join(ROOT, "ctx")], { env: e, stdio: "ignore" });
  const auth = creds ? ["--authfile", writeAuthFile(join(ROOT, `auth-${registry.replace(/[^0-9A-Za-z]/g, "_")}.json`), registry, creds)] : [];
  execFileSync("podman", ["push", "-q", ...auth, "localhost/kiln-test/busybox:1", `docker://${ref}`], { env: e, stdio: "ignore" });
  return ref;
}

/** Pushes, under the same tag, a patched version of the base (a file /patched added): a base tag that moved. */
export function pushPatchedBase(ref: string, registry: string, note: string): void {
  const e = env(registry);
  const ctx = join(ROOT, "patched");
  mkdirSync(ctx, { recursive: true });
  writeFileSync(join(ctx, "Containerfile"), `FROM ${ref}\nRUN echo ${JSON.stringify(note)} > /patched\n`);
  execFileSync("podman", ["build", "-q", "--pull=always", "--layers=false", "-t", `${ref}`, ctx], { env: e, stdio: "ignore" });
  execFileSync("podman", ["push", "-q", ref], { env: e, stdio: "ignore" });
}
