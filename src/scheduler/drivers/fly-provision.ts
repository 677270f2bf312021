// A project's builder on Fly, made and unmade through the Machines API: a volume, then a machine
// from the builder image with the volume mounted at kilnd's storage root (its first start
// formats nothing: kilnd lays out an empty volume itself), then stopped so that it sleeps until
// the first commit. What a failed step leaves behind is destroyed before the error is returned.
import type { Logger } from "pino";
import { KilnError } from "../../errors/kiln-error.js";
import type { FlyFleetConfig, FlyMachineConfig } from "../config.js";
import { flyApi, type FlyAnswer } from "./fly-api.js";

/** kilnd's --data in the builder image (containerfiles/kiln-builder.Containerfile). */
export const STORAGE_ROOT = "/var/lib/kiln";
const WAIT_SECONDS = 60;

function failed(step: string, r: FlyAnswer & { ok: false }): KilnError {
  const code = r.status === 0 || r.status === 408 || r.status === 429 || r.status >= 500 ? "unavailable" : "failed_precondition";
  return new KilnError(code, `Machines API: ${step}: ${r.status} ${r.message}`);
}

/** Fly volume names: lowercase letters, digits and underscores, at most 30. */
export const volumeName = (project: string) => `kiln_${project.replace(/[^a-z0-9]/g, "_")}`.slice(0, 30);

export async function provisionFlyBuilder(fleet: FlyFleetConfig, project: string, logger: Logger): Promise<FlyMachineConfig> {
  const call = flyApi(fleet.apiUrl, fleet.apiTokenFile);
  const app = `/v1/apps/${encodeURIComponent(fleet.app)}`;
  const vol = await call("POST", `${app}/volumes`, { body: { name: volumeName(project), region: fleet.region, size_gb: fleet.volumeSizeGb, encrypted: true } });
  if (!vol.ok) throw failed("create volume", vol);
  const volumeId = String(vol.body.id);
  let machineId: string | undefined;
  try {
    const m = await call("POST", `${app}/machines`, {
      body: {
        name: `kiln-${project}`.slice(0, 63),
        region: fleet.region,
        config: {
          image: fleet.image,
          guest: { cpu_kind: "performance", cpus: fleet.cpus, memory_mb: fleet.memoryMb },
          mounts: [{ volume: volumeId, path: STORAGE_ROOT }],
          env: { KILN_DATA: STORAGE_ROOT, KILN_LISTEN: "[::]:5456", KILN_TOKEN_FILE: "/run/kiln/token" },
          // The app's KILN_TOKEN secret, as a file kilnd reads (and watches).
          files: [{ guest_path: "/run/kiln/token", secret_name: "KILN_TOKEN" }],
          // kilnd exits 0 when idle: the machine then stays stopped until it is started again.
          restart: { policy: "on-failure", max_retries: 5 },
          metadata: { "kiln-project": project },
        },
      },
      timeoutMs: 30_000,
    });
    if (!m.ok) throw failed("create machine", m);
    machineId = String(m.body.id);
    const instance = typeof m.body.instance_id === "string" ? `&instance_id=${encodeURIComponent(m.body.instance_id)}` : "";
    const base = `${app}/machines/${encodeURIComponent(machineId)}`;
    const started = await call("GET", `${base}/wait?state=started&timeout=${WAIT_SECONDS}${instance}`, { timeoutMs: (WAIT_SECONDS + 5) * 1000 });
    if (!started.ok) throw failed("wait for the new machine", started);
    const stop = await call("POST", `${base}/stop`);
    if (!stop.ok) throw failed("stop the new machine", stop);
    const stopped = await call("GET", `${base}/wait?state=stopped&timeout=${WAIT_SECONDS}${instance}`, { timeoutMs: (WAIT_SECONDS + 5) * 1000 });
    if (!stopped.ok) throw failed("wait for the new machine to stop", stopped);
  } catch (e) {
    await destroyFlyBuilder(fleet.apiUrl, fleet.apiTokenFile, fleet.app, machineId, volumeId).catch((err) => logger.warn({ err, project, machineId, volumeId }, "cannot remove what a failed provisioning left"));
    throw e;
  }
  logger.info({ project, machine: machineId, volume: volumeId }, "provisioned the project's builder machine");
  return {
    driver: "fly",
    apiUrl: fleet.apiUrl,
    app: fleet.app,
    machineId,
    apiTokenFile: fleet.apiTokenFile,
    kilndUrl: fleet.kilndUrl.replaceAll("{machine}", machineId).replaceAll("{app}", fleet.app),
    volumeId,
  };
}

/** Destroys the machine (forced: it may be running a build) and then its volume; gone already is fine. */
export async function destroyFlyBuilder(apiUrl: string, tokenFile: string, appName: string, machineId: string | undefined, volumeId: string | undefined): Promise<void> {
  const call = flyApi(apiUrl, tokenFile);
  const app = `/v1/apps/${encodeURIComponent(appName)}`;
  if (machineId) {
    const r = await call("DELETE", `${app}/machines/${encodeURIComponent(machineId)}?force=true`, { timeoutMs: 30_000 });
    if (!r.ok && r.status !== 404) throw failed("destroy machine", r);
  }
  if (volumeId) {
    // Fly detaches the volume as the machine is destroyed: a moment's 412 is tried again.
    for (let i = 0; ; i++) {
      const r = await call("DELETE", `${app}/volumes/${encodeURIComponent(volumeId)}`);
      if (r.ok || r.status === 404) return;
      if (r.status !== 412 || i >= 10) throw failed("destroy volume", r);
      await new Promise((res) => setTimeout(res, 500));
    }
  }
}
