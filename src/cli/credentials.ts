// The kiln CLI's secrets and credentials, read from files and environment variables (never
// from the command line itself, which every process on the machine can read):
//   --secret id=ID,src=FILE | id=ID,env=VAR
//   --registry-user USER --registry-password-file FILE [--registry HOST[:PORT][/PREFIX]]
//   --registry-auth-file FILE   (containers-auth.json: every `auths` entry is sent)
//   --git-user USER --git-password-file FILE
import { readFileSync } from "node:fs";
import { KilnError, usageError } from "../errors/kiln-error.js";

const readSecretFile = (flag: string, file: string) => {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    throw usageError(`${flag}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? "error"}`);
  }
};
// A password file's trailing newline is the editor's, not the password's.
const readPasswordFile = (flag: string, file: string) => readSecretFile(flag, file).replace(/\r?\n$/, "");

export function parseSecrets(specs: string[], env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const spec of specs) {
    const kv = new Map(spec.split(",").map((p) => [p.slice(0, p.indexOf("=") >>> 0), p.slice(p.indexOf("=") + 1)] as const));
    const id = kv.get("id");
    if (!id || spec.split(",").some((p) => !p.includes("="))) throw usageError(`--secret ${JSON.stringify(spec)}: expected id=ID,src=FILE or id=ID,env=VAR`);
    const src = kv.get("src") ?? kv.get("source");
    const name = kv.get("env");
    if ((src === undefined) === (name === undefined)) throw usageError(`--secret id=${id}: give one of src=FILE or env=VAR`);
    if (src !== undefined) out[id] = readSecretFile("--secret", src);
    else {
      const v = env[name!];
      if (v === undefined) throw usageError(`--secret id=${id}: the environment variable ${name} is not set`);
      out[id] = v;
    }
  }
  return out;
}

interface Credential {
  registry: string;
  username: string;
  password: string;
}

export function parseRegistryCredentials(o: { registry?: string; user?: string; passwordFile?: string; authFile?: string; image: string }): Credential[] {
  const creds: Credential[] = [];
  if (o.authFile) {
    let auths: Record<string, { auth?: string }> = {};
    try {
      auths = (JSON.parse(readSecretFile("--registry-auth-file", o.authFile)) as { auths?: typeof auths }).auths ?? {};
    } catch (e) {
      if (e instanceof KilnError) throw e;
      throw usageError(`--registry-auth-file: ${o.authFile} is not a containers-auth.json file`);
    }
    for (const [registry, entry] of Object.entries(auths)) {
      const plain = Buffer.from(entry.auth ?? "", "base64").toString("utf8");
      const i = plain.indexOf(":");
      if (i > 0) creds.push({ registry: registry.replace(/^https?:\/\//, "").replace(/\/+$/, ""), username: plain.slice(0, i), password: plain.slice(i + 1) });
    }
  }
  if (o.user || o.passwordFile) {
    if (!o.user || !o.passwordFile) throw usageError("--registry-user and --registry-password-file go together");
    const registry = o.registry ?? o.image.split("/")[0] ?? "";
    if (!o.registry && !/[.:]|^localhost$/.test(registry)) throw usageError("--registry-user: --image names no registry; give --registry HOST");
    creds.push({ registry, username: o.user, password: readPasswordFile("--registry-password-file", o.passwordFile) });
  }
  return creds;
}

export function parseGitCredentials(o: { user?: string; passwordFile?: string }): { username: string; password: string } {
  if (!o.passwordFile) {
    if (o.user) throw usageError("--git-user needs --git-password-file");
    return { username: "", password: "" };
  }
  return { username: o.user ?? "", password: readPasswordFile("--git-password-file", o.passwordFile) };
}
