// A real registry for tests: Debian's docker-registry (CNCF distribution) on a free loopback port,
// open, or asking for credentials (htpasswd: Basic; token: Bearer tokens from an issuer).
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { freePort, waitFor } from "./wait.js";

export interface TestRegistry {
  host: string;
  /** The manifest digest the registry serves for repo:tag, or undefined. */
  digest(repo: string, tag: string, authorization?: string): Promise<string | undefined>;
  stop(): Promise<void>;
}

export interface RegistryAuthOptions {
  /** auth: htpasswd with one user (bcrypt, made by htpasswd -Bbn). */
  htpasswd?: { username: string; password: string };
  /** auth: token, tokens from this issuer (test/helpers/token-issuer.ts). */
  token?: { realm: string; service: string; issuer: string; certFile: string };
}

export async function startRegistry(dir: string, auth: RegistryAuthOptions = {}): Promise<TestRegistry> {
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  mkdirSync(join(dir, "data"), { recursive: true });
  let authYaml = "";
  if (auth.htpasswd) {
    // -i: the password on stdin, not in htpasswd's command line (tests watch every process's argv).
    const line = execFileSync("htpasswd", ["-Bin", auth.htpasswd.username], { input: auth.htpasswd.password, encoding: "utf8" }).trim();
    writeFileSync(join(dir, "htpasswd"), `${line}\n`);
    authYaml = `auth:\n  htpasswd:\n    realm: kiln-test\n    path: ${dir}/htpasswd\n`;
  } else if (auth.token) {
    const t = auth.token;
    authYaml = `auth:\n  token:\n    realm: ${t.realm}\n    service: ${t.service}\n    issuer: ${t.issuer}\n    rootcertbundle: ${t.certFile}\n`;
  }
  writeFileSync(
    join(dir, "config.yml"),
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\n  delete:\n    enabled: true\nhttp:\n  addr: ${host}\n${authYaml}`,
  );
  const proc: ChildProcess = spawn("docker-registry", ["serve", join(dir, "config.yml")], { stdio: "ignore" });
  const open = !auth.htpasswd && !auth.token;
  await waitFor(async () => {
    const r = await fetch(`http://${host}/v2/`).catch(() => undefined);
    return open ? r?.ok === true : r?.status === 401;
  }, 10_000, "registry start");
  return {
    host,
    async digest(repo, tag, authorization) {
      const r = await fetch(`http://${host}/v2/${repo}/manifests/${tag}`, {
        method: "HEAD",
        headers: {
          accept: "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
          ...(authorization ? { authorization } : {}),
        },
      });
      return r.ok ? (r.headers.get("docker-content-digest") ?? undefined) : undefined;
    },
    async stop() {
      proc.kill("SIGTERM");
    },
  };
}
