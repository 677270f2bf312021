// A real registry for tests: Debian's docker-registry (CNCF distribution) on a free loopback port.
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { freePort, waitFor } from "./wait.js";

export interface TestRegistry {
  host: string;
  /** The manifest digest the registry serves for repo:tag, or undefined. */
  digest(repo: string, tag: string): Promise<string | undefined>;
  stop(): Promise<void>;
}

export async function startRegistry(dir: string): Promise<TestRegistry> {
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  mkdirSync(join(dir, "data"), { recursive: true });
  writeFileSync(
    join(dir, "config.yml"),
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\n  delete:\n    enabled: true\nhttp:\n  addr: ${host}\n`,
  );
  const proc: ChildProcess = spawn("docker-registry", ["serve", join(dir, "config.yml")], { stdio: "ignore" });
  await waitFor(async () => (await fetch(`http://${host}/v2/`).catch(() => undefined))?.ok === true, 10_000, "registry start");
  return {
    host,
    async digest(repo, tag) {
      const r = await fetch(`http://${host}/v2/${repo}/manifests/${tag}`, {
        method: "HEAD",
        headers: { accept: "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json" },
      });
      return r.ok ? (r.headers.get("docker-content-digest") ?? undefined) : undefined;
    },
    async stop() {
      proc.kill("SIGTERM");
    },
  };
}
