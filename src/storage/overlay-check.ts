// Is container storage on native overlay? Overlay on overlay (storage on a container's own
// filesystem) or a FUSE mount_program makes every layer operation slow: the article's builds
// went from 30 s to 13 s by mounting a volume at the storage root. kilnd asks podman at start
// and says so loudly when it is not native.
import { cli } from "../podman/cli.js";
import { errorSummary } from "../process/exec.js";

export interface OverlayStatus {
  checked: boolean;
  native: boolean;
  driver: string;
  reason: string;
  fix: string;
}

interface PodmanInfo {
  store?: {
    graphDriverName?: string;
    graphRoot?: string;
    graphStatus?: Record<string, string>;
    // overlay.mount_program comes as { Executable, Package, Version }.
    graphOptions?: Record<string, unknown>;
  };
}

export const UNCHECKED: OverlayStatus = { checked: false, native: false, driver: "", reason: "not checked yet", fix: "" };

export async function checkOverlay(env: Record<string, string>): Promise<OverlayStatus> {
  const r = await cli.info(env);
  if (r.exitCode !== 0) {
    return { checked: true, native: false, driver: "", reason: `podman info failed: ${errorSummary(r)}`, fix: "install podman (scripts/setup.sh)" };
  }
  const store = (JSON.parse(r.stdout) as PodmanInfo).store ?? {};
  const driver = store.graphDriverName ?? "";
  const root = store.graphRoot ?? "the storage root";
  const mp = store.graphOptions?.["overlay.mount_program"];
  const mountProgram = typeof mp === "object" && mp !== null ? String((mp as { Executable?: string }).Executable ?? "a mount program") : mp ? String(mp) : undefined;
  const fix = `mount a volume (a real filesystem such as ext4 or xfs) at ${root}, and do not set a mount_program`;
  if (driver !== "overlay") return { checked: true, native: false, driver, reason: `storage driver is ${driver || "unknown"}, not overlay`, fix };
  if (mountProgram) return { checked: true, native: false, driver, reason: `overlay goes through ${mountProgram} (FUSE), not the kernel`, fix };
  if (store.graphStatus?.["Native Overlay Diff"] !== "true") {
    const backing = store.graphStatus?.["Backing Filesystem"] ?? "unknown";
    return { checked: true, native: false, driver, reason: `overlay diff is not native on the backing filesystem (${backing}); storage is probably on another overlay`, fix };
  }
  return { checked: true, native: true, driver, reason: "", fix: "" };
}
