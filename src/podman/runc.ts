// RUN steps live outside podman's process tree, in runc containers whose bundle buildah makes
// under TMPDIR. kiln gives every build its own TMPDIR, so a build's containers are found by
// their bundle path and stopped with runc directly: killing podman alone leaves them running.
import { cli } from "./cli.js";

/** Kills (and, with remove, deletes) every runc container whose bundle lies under dir. */
export async function killContainersUnder(dir: string, env: Record<string, string>, remove: boolean): Promise<number> {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const mine = (await cli.runcList(env)).filter((c) => c.bundle.startsWith(prefix));
  await Promise.all(
    mine.map(async (c) => {
      if (c.status === "running" || c.status === "paused" || c.status === "created") {
        await cli.runcKill(env, c.id);
      }
      if (remove) await cli.runcDelete(env, c.id);
    }),
  );
  return mine.length;
}
