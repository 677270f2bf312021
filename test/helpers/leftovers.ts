// What a stopped build must not leave behind: processes, runc containers, working containers.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** Processes whose command line contains the text (read from /proc). */
export function processesWith(text: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      if (cmd.includes(text) && Number(pid) !== process.pid) found.push(`${pid}: ${cmd}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** Build processes running with kilnd's container configuration for this data dir (podman, buildah, runc). */
export function podmanProcessesFor(data: string): string[] {
  const conf = join(data, "conf/storage.conf");
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      if (!readFileSync(`/proc/${pid}/environ`, "utf8").includes(conf)) continue;
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      // kilnd's own status questions at start (podman version, podman info, and the
      // `--version` calls podman info makes) and the prune that follows a successful build
      // (podman images, rmi, image prune) are not leftovers of a build.
      if (/podman|buildah|runc|conmon/.test(cmd) && !/^podman (info|version|images|rmi|image prune)\b|\s--version\b/.test(cmd)) found.push(`${pid}: ${cmd}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

export function runcContainersUnder(dir: string): string[] {
  const out = execFileSync("runc", ["list", "--format", "json"], { encoding: "utf8" }).trim();
  const list = (out ? JSON.parse(out) : []) as Array<{ id: string; bundle: string }> | null;
  return (list ?? []).filter((c) => c.bundle.startsWith(dir)).map((c) => c.id);
}

export function workingContainers(data: string): string[] {
  const out = execFileSync("buildah", ["containers", "--json"], { encoding: "utf8", env: kilndPodmanEnv(data) }).trim();
  return ((out && out !== "null" ? JSON.parse(out) : []) as Array<{ id: string }>).map((c) => c.id);
}

/** The environment to run podman/buildah on a kilnd's storage (its own conf files under data). */
export function kilndPodmanEnv(data: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    CONTAINERS_CONF: join(data, "conf/containers.conf"),
    CONTAINERS_STORAGE_CONF: join(data, "conf/storage.conf"),
    CONTAINERS_REGISTRIES_CONF: join(data, "conf/registries.conf"),
  };
}

/** Containers' root filesystems (overlay .../merged) mounted under dir. */
export function containerMountsUnder(dir: string): string[] {
  return readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[1] ?? "")
    .filter((m) => m.startsWith(`${dir}/`) && m.endsWith("/merged"));
}
