// Registry credentials for one build: the request's own (they win for their registry) over
// kilnd's --registry-auth-file, a containers-auth.json(5) file with `auths` and `credHelpers`.
// podman and buildah get the merged set as an auth file in the build's private tmpfs directory;
// kiln's own registry client looks credentials up here, the most specific key first, as
// containers/image does.
import { readFile } from "node:fs/promises";
import { exec } from "../process/exec.js";
import { KilnError } from "../errors/kiln-error.js";

export interface Credential {
  username: string;
  password: string;
}

export interface AuthFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credHelpers?: Record<string, string>;
  [k: string]: unknown;
}

export interface RegistryCredentials {
  /** The auth file podman and buildah are given, or undefined when there is nothing to give. */
  authFile(): AuthFile | undefined;
  /** Credentials for a repository (host[:port]/path), or undefined for anonymous access. */
  lookup(host: string, repository: string): Promise<Credential | undefined>;
  /** Every password known to this set (for masking). */
  readonly passwords: string[];
}

/** "https://host:5000/v1/" and "host:5000/" as "host:5000", the form auth keys are compared in. */
export const normalizeKey = (key: string) => key.replace(/^https?:\/\//, "").replace(/\/v[12]\/?$/, "").replace(/\/+$/, "");

const hostOf = (key: string) => normalizeKey(key).split("/")[0]!;

/** Reads kilnd's machine-wide auth file; a broken one is an error for every build that uses it. */
export async function readAuthFile(path: string | undefined): Promise<AuthFile> {
  if (!path) return {};
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new KilnError("failed_precondition", `--registry-auth-file: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? "error"}`);
  }
  try {
    const v = JSON.parse(text) as AuthFile;
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not an object");
    return v;
  } catch {
    // Never echo the file: it holds passwords.
    throw new KilnError("failed_precondition", `--registry-auth-file: ${path} is not a containers-auth.json file`);
  }
}

function decodeEntry(e: NonNullable<AuthFile["auths"]>[string]): Credential | undefined {
  if (e.username !== undefined && e.password !== undefined) return { username: e.username, password: e.password };
  if (!e.auth) return undefined;
  const plain = Buffer.from(e.auth, "base64").toString("utf8");
  const i = plain.indexOf(":");
  return i < 0 ? undefined : { username: plain.slice(0, i), password: plain.slice(i + 1) };
}

export function createRegistryCredentials(
  machine: AuthFile,
  request: readonly { registry: string; username: string; password: string }[],
  env: Record<string, string>,
  /** Told of each password a credential helper gives (to mask it). */
  onSecret: (value: string) => void = () => {},
): RegistryCredentials {
  const auths: Record<string, Credential> = {};
  for (const [key, entry] of Object.entries(machine.auths ?? {})) {
    const c = decodeEntry(entry);
    if (c) auths[normalizeKey(key)] = c;
  }
  const helpers: Record<string, string> = {};
  for (const [key, name] of Object.entries(machine.credHelpers ?? {})) helpers[hostOf(key)] = name;
  for (const r of request) {
    auths[normalizeKey(r.registry)] = { username: r.username, password: r.password };
    // A helper would win over auths for its host in podman: the request's credentials must.
    delete helpers[hostOf(r.registry)];
  }
  const helperCache = new Map<string, Promise<Credential | undefined>>();

  return {
    passwords: Object.values(auths).map((c) => c.password),
    authFile() {
      if (Object.keys(auths).length === 0 && Object.keys(helpers).length === 0) return undefined;
      const file: AuthFile = { auths: {} };
      for (const [key, c] of Object.entries(auths)) file.auths![key] = { auth: Buffer.from(`${c.username}:${c.password}`).toString("base64") };
      if (Object.keys(helpers).length > 0) file.credHelpers = { ...helpers };
      return file;
    },
    async lookup(host, repository) {
      // registry/ns/repo, registry/ns, registry: the most specific key that is there.
      const parts = `${host}/${repository}`.split("/");
      for (let n = parts.length; n >= 1; n--) {
        const key = parts.slice(0, n).join("/");
        if (auths[key]) return auths[key];
      }
      const helper = helpers[host];
      if (!helper) return undefined;
      let p = helperCache.get(host);
      if (!p) {
        p = runHelper(helper, host, env).then((c) => {
          if (c) onSecret(c.password);
          return c;
        });
        helperCache.set(host, p);
      }
      return p;
    },
  };
}

/** `docker-credential-NAME get`, the server on stdin, {"Username","Secret"} on stdout. */
async function runHelper(name: string, host: string, env: Record<string, string>): Promise<Credential | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new KilnError("failed_precondition", `credHelpers: ${JSON.stringify(name)} is not a helper name`);
  const r = await exec(`docker-credential-${name}`, ["get"], { input: host, env, timeoutMs: 30_000 });
  if (r.exitCode !== 0) {
    // "credentials not found" is anonymous access; anything else the helper says is not echoed (it may hold secrets).
    if (/credentials not found/i.test(String(r.stdout))) return undefined;
    throw new KilnError("failed_precondition", `credential helper docker-credential-${name} failed for ${host} (exit code ${r.exitCode})`);
  }
  try {
    const v = JSON.parse(String(r.stdout)) as { Username?: string; Secret?: string };
    if (typeof v.Secret !== "string" || typeof v.Username !== "string" || v.Username === "<token>") return undefined;
    return { username: v.Username, password: v.Secret };
  } catch {
    throw new KilnError("failed_precondition", `credential helper docker-credential-${name} gave no credentials for ${host}`);
  }
}
