// Where kilnd stops builds' processes, and cleans up after those a killed kilnd could not stop:
// "where does cancel kill the process tree" is answered here.
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { BuildSchema, BuildState } from "../gen/kiln/v1/builder_pb.js";
import type { Podman } from "../podman/podman.js";
import { killContainersUnder } from "../podman/runc.js";
import { SKELETON_REPO } from "../podman/stage-images.js";
import { exec } from "../process/exec.js";
import { killProcessesWithEnv } from "../process/orphans.js";
import type { SecretRoot } from "../secrets/secret-dir.js";
import type { MessageStore } from "../store/message-store.js";
import { listImages, removeImages } from "../storage/prune.js";
import { mountPoints } from "../util/mounts.js";
import { timestampFromMs } from "../util/time.js";
import type { ActiveBuild } from "./active-build.js";

// How long a stopped process gets to exit on SIGTERM before SIGKILL: the whole stop stays under 2 s.
const PODMAN_EXIT_MS = 800;
const PODMAN_GRACE_MS = 500;
const GIT_GRACE_MS = 300;

/**
 * Ends the process the build is running and everything it started. Returns true when podman was
 * running: its working containers may be left, for a sweep once no build runs.
 */
export async function killBuildProcesses(a: ActiveBuild, podman: Podman): Promise<boolean> {
  const procs = [...a.procs];
  if (procs.length === 0) return false;
  const git = procs.filter((p) => p.kind === "git");
  await Promise.all(git.map((p) => p.run.stop(GIT_GRACE_MS)));
  const others = procs.filter((p) => p.kind !== "git");
  if (others.length === 0) return false;
  // RUN steps run outside podman's process tree: end them first, so podman exits and removes
  // its working containers itself; signal it only if it does not, and then make sure of
  // anything left.
  const env = podman.env();
  await killContainersUnder(a.tmpDir, env, false);
  await Promise.all(
    others.map(async (p) => {
      const exitedAlone = await Promise.race([p.run.result.then(() => true), delay(PODMAN_EXIT_MS, false)]);
      if (!exitedAlone) await p.run.stop(PODMAN_GRACE_MS);
    }),
  );
  await killContainersUnder(a.tmpDir, env, true);
  return true;
}

export interface RecoveryDeps {
  records: MessageStore<typeof BuildSchema>;
  podman: Podman;
  secretRoot: SecretRoot;
  tmpRoot: string;
  logger: Logger;
}

/**
 * At start: builds a killed kilnd left QUEUED or RUNNING end FAILED "interrupted", and whatever it
 * was running is an orphan now (processes with kiln's storage configuration, RUN containers,
 * working containers, secret files, temp files): all of it goes.
 */
export async function recoverInterrupted(d: RecoveryDeps): Promise<void> {
  await mkdir(d.tmpRoot, { recursive: true });
  const all = await d.records.load((file, err) => d.logger.warn({ file, err }, "skipping an unreadable build record"));
  const ended = new Set([BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED]);
  const interrupted = all.filter((b) => !ended.has(b.state));
  const now = Date.now();
  for (const b of interrupted) {
    b.state = BuildState.FAILED;
    b.error = "interrupted: kilnd restarted";
    b.finishTime = timestampFromMs(now);
    await d.records.save(b);
    d.logger.warn({ build: b.id, project: b.project }, "build was interrupted by a restart");
  }
  const secretDirs = await d.secretRoot.sweep();
  if (secretDirs > 0) d.logger.warn({ builds: secretDirs }, "removed the secret files of builds a killed kilnd left behind");
  // A kilnd that was killed leaves the images its fast path kept mounted (podman counts mounts).
  if ((await mountsUnder(d.podman.layout.graphRoot)).some((m) => m.endsWith("/merged"))) await d.podman.unmountAllImages();
  const leftovers = await readdir(d.tmpRoot);
  if (leftovers.length > 0 || interrupted.length > 0) {
    const env = d.podman.env();
    const orphans = await killProcessesWithEnv("CONTAINERS_STORAGE_CONF", env.CONTAINERS_STORAGE_CONF!);
    await killContainersUnder(d.tmpRoot, env, true);
    d.logger.warn({ interrupted: interrupted.length, orphans }, "cleaned up after an interrupted kilnd");
    await d.podman.removeWorkingContainers();
    // A first build's skeleton goes after its build; a killed kilnd left it (it would count
    // among the project's kept images until newer builds pushed it out).
    const skeletons = (await listImages(env)).filter((i) => (i.Names ?? []).some((n) => n.startsWith(`${SKELETON_REPO}/`))).map((i) => i.Id);
    if (skeletons.length > 0) await removeImages(env, skeletons);
    // The fast path's RUN overlays go before their directories.
    await unmountUnder(d.tmpRoot, env);
    await Promise.all(leftovers.map((x) => rm(join(d.tmpRoot, x), { recursive: true, force: true })));
  }
}

/** Mount points below dir, deepest first. */
async function mountsUnder(dir: string): Promise<string[]> {
  return (await mountPoints()).filter((p) => p.startsWith(`${dir}/`)).sort((a, b) => b.length - a.length);
}

async function unmountUnder(dir: string, env: Record<string, string>): Promise<void> {
  for (const p of await mountsUnder(dir)) await exec("umount", [p], { env, timeoutMs: 30_000 });
}

const delay = <T>(ms: number, value: T) => new Promise<T>((r) => setTimeout(r, ms, value).unref());
