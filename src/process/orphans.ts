// Processes a killed kilnd left running: git and podman calls carry kiln's storage configuration
// in their environment, which is how a restarted kilnd finds and ends them.
import { readdir, readFile } from "node:fs/promises";

/** SIGKILLs every process whose environment has NAME=VALUE; returns how many. */
export async function killProcessesWithEnv(name: string, value: string): Promise<number> {
  const needle = `${name}=${value}\0`;
  let killed = 0;
  const pids = (await readdir("/proc")).filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid);
  await Promise.all(
    pids.map(async (pid) => {
      try {
        const env = await readFile(`/proc/${pid}/environ`, "utf8");
        if (!env.includes(needle)) return;
        process.kill(Number(pid), "SIGKILL");
        killed++;
      } catch {
        // gone meanwhile, or not ours to read
      }
    }),
  );
  return killed;
}
