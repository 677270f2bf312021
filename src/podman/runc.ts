// RUN steps live outside podman's process tree, in runc containers whose bundle buildah makes
// under TMPDIR. kiln gives every build its own TMPDIR, so a build's containers are found by
// their bundle path and stopped with runc directly: killing podman alone leaves them running.
import { loadExeca } from "../process/execa.js";

interface RuncContainer {
  id: string;
  bundle: string;
  status: string;
}

async function list(env: Record<string, string>): Promise<RuncContainer[]> {
  const execa = await loadExeca();
  const r = await execa("runc", ["list", "--format", "json"], { env, extendEnv: false, reject: false, timeout: 5000 });
  if (r.exitCode !== 0 || !r.stdout.trim()) return [];
  try {
    return (JSON.parse(r.stdout) as RuncContainer[] | null) ?? [];
  } catch {
    return [];
  }
}

/** Kills (and, with remove, deletes) every runc container whose bundle lies under dir. */
export async function killContainersUnder(dir: string, env: Record<string, string>, remove: boolean): Promise<number> {
  const execa = await loadExeca();
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const mine = (await list(env)).filter((c) => c.bundle.startsWith(prefix));
  await Promise.all(
    mine.map(async (c) => {
      if (c.status === "running" || c.status === "paused" || c.status === "created") {
        await execa("runc", ["kill", "--", c.id, "KILL"], { env, extendEnv: false, reject: false, timeout: 5000 });
      }
      if (remove) await execa("runc", ["delete", "--force", "--", c.id], { env, extendEnv: false, reject: false, timeout: 5000 });
    }),
  );
  return mine.length;
}
