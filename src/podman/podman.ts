// The podman side of kilnd: the environment every podman, buildah and runc call runs in, and
// the housekeeping calls that are not part of one build.
import { execa } from "execa";
import type { StorageLayout } from "./storage-config.js";

export interface PodmanOptions {
  layout: StorageLayout;
  /** Environment variables passed through from kilnd's own (PATH, HOME, proxies, CA bundles). */
  baseEnv: Record<string, string>;
}

export function createPodman(opts: PodmanOptions) {
  const env = (tmpDir?: string): Record<string, string> => ({
    ...opts.baseEnv,
    ...opts.layout.env,
    ...(tmpDir ? { TMPDIR: tmpDir } : {}),
  });

  let versionCache: Promise<string> | undefined;

  return {
    layout: opts.layout,
    env,
    /** Removes buildah working containers that interrupted builds left in storage. */
    async removeWorkingContainers(): Promise<void> {
      await execa("buildah", ["rm", "--all"], { env: env(), extendEnv: false, reject: false, timeout: 30_000 });
    },
    version(): Promise<string> {
      versionCache ??= execa("podman", ["version", "--format", "{{.Client.Version}}"], { env: env(), extendEnv: false, timeout: 10_000 })
        .then((r) => r.stdout.trim())
        .catch(() => {
          versionCache = undefined;
          return "unknown";
        });
      return versionCache;
    },
  };
}

export type Podman = ReturnType<typeof createPodman>;

/** The variables kilnd passes on to git and podman; the rest of its environment stays home. */
export function passThroughEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const keep = /^(PATH|HOME|USER|LANG|LC_[A-Z]+|TZ|SSL_CERT_FILE|SSL_CERT_DIR|GIT_SSL_CAINFO|NODE_EXTRA_CA_CERTS|REGISTRY_AUTH_FILE|(?:HTTPS?|NO|ALL)_PROXY|(?:https?|no|all)_proxy|SSH_AUTH_SOCK)$/;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && keep.test(k)) out[k] = v;
  out.PATH ??= "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  return out;
}
