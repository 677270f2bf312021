// Where a build's secrets live while it runs: a directory of its own on tmpfs (never the
// volume), mode 0700, files 0600, holding each build secret as a file for buildah's --secret
// and the registry auth file for podman and buildah. Removed when the build ends; kilnd's
// start-up removes whatever a killed kilnd left there.
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KilnError } from "../errors/kiln-error.js";

export interface SecretDir {
  readonly path: string;
  /** Writes one file, mode 0600; returns its path. */
  write(name: string, content: string): Promise<string>;
  remove(): Promise<void>;
}

export function createSecretRoot(root: string | undefined) {
  return {
    /** The build's directory, made on first use; refused when kilnd has no tmpfs to keep it on. */
    async open(buildId: string): Promise<SecretDir> {
      if (!root) throw new KilnError("failed_precondition", "secrets and registry credentials need a tmpfs (/run, /dev/shm or /tmp) to keep them off the volume; none is mounted");
      await mkdir(root, { recursive: true, mode: 0o700 });
      const path = join(root, buildId);
      await mkdir(path, { mode: 0o700 });
      return {
        path,
        async write(name, content) {
          if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new KilnError("internal", `secret file name ${JSON.stringify(name)}`);
          const file = join(path, name);
          await writeFile(file, content, { mode: 0o600, flag: "wx" });
          return file;
        },
        async remove() {
          await rm(path, { recursive: true, force: true });
        },
      };
    },
    /** Removes every build's directory (start-up, before any build runs: a killed kilnd's leftovers). */
    async sweep(): Promise<number> {
      if (!root) return 0;
      const names = await readdir(root).catch(() => [] as string[]);
      await Promise.all(names.map((n) => rm(join(root, n), { recursive: true, force: true })));
      return names.length;
    },
  };
}

export type SecretRoot = ReturnType<typeof createSecretRoot>;
