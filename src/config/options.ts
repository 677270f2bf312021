// kilnd's settings, from flags and KILN_* environment variables (a flag wins).
import { parseArgs } from "node:util";
import { isIP } from "node:net";
import { resolve } from "node:path";
import { usageError } from "../errors/kiln-error.js";
import { parseHostPort } from "../util/host-port.js";

export interface DaemonOptions {
  listenHost: string;
  listenPort: number;
  dataDir: string;
  /** 0: never idle out. */
  idleTimeoutSec: number;
  tokenFile?: string;
  insecureRegistries: string[];
  maxConcurrentBuilds: number;
  buildNetwork: string;
  /** What runs the build: buildah bud (default) or podman build. */
  buildEngine: "buildah" | "podman";
  /** Image format: docker (keeps HEALTHCHECK, SHELL, ONBUILD, as BuildKit does) or oci. */
  imageFormat: "docker" | "oci";
  logLevel: string;
  /** Images per project kept by the prune after each build. */
  keepBuilds: number;
  /** Finished build records (and logs) per project kept on the volume. */
  keepRecords: number;
  /** Used share of the volume (percent) above which container storage is reset. */
  resetThresholdPercent: number;
  /** kiln's fast path (a final COPY made from the git diff, no podman); on unless --fast-path off. */
  fastPath: boolean;
  /** FUSE program for overlay (fuse-overlayfs), where the kernel's cannot be used: slow. */
  overlayMountProgram?: string;
  /** containers-auth.json(5) with the credentials of the registries this machine always uses. */
  registryAuthFile?: string;
  /** A push's deadline before its bytes are counted in (builds/push.ts adds time per byte). */
  pushTimeoutSec: number;
  /** What pushes a full build: kiln from storage's files (default; podman when it cannot), or podman push always. */
  pushEngine: "kiln" | "podman";
  /** With a token file, /metrics needs the token too ("token", the default) or answers anyone on the network ("none"). */
  metricsAuth: "token" | "none";
}


export const KILND_USAGE = `usage: kilnd --data DIR [--listen HOST:PORT] [--idle-timeout SECONDS] [--token-file FILE]
             [--insecure-registry HOST:PORT ...] [--max-concurrent-builds N] [--build-network MODE]
             [--keep-builds N] [--keep-records N] [--reset-threshold PERCENT] [--overlay-mount-program PATH]
             [--build-engine buildah|podman] [--fast-path on|off] [--log-level LEVEL]
             [--registry-auth-file FILE] [--image-format docker|oci] [--push-timeout SECONDS]
             [--push-engine kiln|podman] [--metrics-auth token|none]
Every flag can also be given as an environment variable: --idle-timeout as KILN_IDLE_TIMEOUT, and so on
(KILN_INSECURE_REGISTRY takes a comma-separated list).`;

const SPEC = {
  listen: { type: "string" },
  data: { type: "string" },
  "idle-timeout": { type: "string" },
  "token-file": { type: "string" },
  "insecure-registry": { type: "string", multiple: true },
  "max-concurrent-builds": { type: "string" },
  "build-network": { type: "string" },
  "build-engine": { type: "string" },
  "fast-path": { type: "string" },
  "log-level": { type: "string" },
  "keep-builds": { type: "string" },
  "keep-records": { type: "string" },
  "reset-threshold": { type: "string" },
  "overlay-mount-program": { type: "string" },
  "registry-auth-file": { type: "string" },
  "image-format": { type: "string" },
  "push-timeout": { type: "string" },
  "push-engine": { type: "string" },
  "metrics-auth": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

const envName = (flag: string) => `KILN_${flag.toUpperCase().replace(/-/g, "_")}`;

function intIn(name: string, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw)) throw usageError(`--${name}: ${JSON.stringify(raw)} is not a whole number`);
  const n = Number(raw);
  if (n < min || n > max) throw usageError(`--${name}: must be between ${min} and ${max}`);
  return n;
}


export function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}

export function parseDaemonOptions(argv: string[], env: NodeJS.ProcessEnv): DaemonOptions | "help" {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: SPEC, allowPositionals: false, strict: true });
  } catch (e) {
    throw usageError((e as Error).message);
  }
  const v = parsed.values;
  if (v.help) return "help";
  const get = (flag: keyof typeof SPEC): string | undefined => {
    const val = v[flag];
    if (typeof val === "string") return val;
    return env[envName(flag)] || undefined;
  };
  const data = get("data");
  if (!data) throw usageError("--data DIR is required (the machine's volume)");
  const listen = parseHostPort(get("listen") ?? "127.0.0.1:5456", "--listen");
  const insecure = v["insecure-registry"] ?? (env.KILN_INSECURE_REGISTRY ?? "").split(",").filter(Boolean);
  for (const r of insecure) {
    if (!/^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-fA-F:]+\](:\d{1,5})?$/.test(r)) throw usageError(`--insecure-registry: ${JSON.stringify(r)} is not HOST[:PORT]`);
  }
  const network = get("build-network") ?? "host";
  if (!/^[a-z0-9][a-z0-9_.:-]*$/.test(network)) throw usageError(`--build-network: ${JSON.stringify(network)} is not a network mode`);
  const engine = get("build-engine") ?? "buildah";
  if (engine !== "buildah" && engine !== "podman") throw usageError(`--build-engine: ${JSON.stringify(engine)} is not buildah or podman`);
  const imageFormat = get("image-format") ?? "docker";
  if (imageFormat !== "docker" && imageFormat !== "oci") throw usageError(`--image-format: ${JSON.stringify(imageFormat)} is not docker or oci`);
  const metricsAuth = get("metrics-auth") ?? "token";
  if (metricsAuth !== "token" && metricsAuth !== "none") throw usageError(`--metrics-auth: ${JSON.stringify(metricsAuth)} is not token or none`);
  const pushEngine = get("push-engine") ?? "kiln";
  if (pushEngine !== "kiln" && pushEngine !== "podman") throw usageError(`--push-engine: ${JSON.stringify(pushEngine)} is not kiln or podman`);
  const fastPath = get("fast-path") ?? "on";
  if (fastPath !== "on" && fastPath !== "off") throw usageError(`--fast-path: ${JSON.stringify(fastPath)} is not on or off`);
  const opts: DaemonOptions = {
    listenHost: listen.host,
    listenPort: listen.port,
    dataDir: resolve(data),
    idleTimeoutSec: intIn("idle-timeout", get("idle-timeout") ?? "300", 0, 7 * 24 * 3600),
    insecureRegistries: insecure,
    maxConcurrentBuilds: intIn("max-concurrent-builds", get("max-concurrent-builds") ?? "1", 1, 64),
    buildNetwork: network,
    buildEngine: engine,
    imageFormat,
    fastPath: fastPath === "on",
    logLevel: get("log-level") ?? "info",
    keepBuilds: intIn("keep-builds", get("keep-builds") ?? "3", 1, 1000),
    keepRecords: intIn("keep-records", get("keep-records") ?? "200", 1, 1_000_000),
    resetThresholdPercent: intIn("reset-threshold", get("reset-threshold") ?? "75", 1, 100),
    pushTimeoutSec: intIn("push-timeout", get("push-timeout") ?? "120", 1, 24 * 3600),
    pushEngine,
    metricsAuth,
  };
  const mountProgram = get("overlay-mount-program");
  if (mountProgram) opts.overlayMountProgram = resolve(mountProgram);
  // podman's own variable, when kilnd inherits it, names the same kind of file.
  const authFile = get("registry-auth-file") ?? (env.REGISTRY_AUTH_FILE || undefined);
  if (authFile) opts.registryAuthFile = resolve(authFile);
  const tokenFile = get("token-file");
  if (tokenFile) opts.tokenFile = resolve(tokenFile);
  if (!opts.tokenFile && !isLoopback(opts.listenHost)) {
    throw usageError(`--listen ${opts.listenHost}: without --token-file kilnd listens on loopback only`);
  }
  return opts;
}
