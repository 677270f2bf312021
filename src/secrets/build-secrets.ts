// Everything secret about one build, made ready before it runs: the registry credentials (the
// request's over kilnd's auth file) as an auth file for podman and buildah, the build secrets
// as files for buildah's --secret, the Containerfile's secret mounts keyed on their values, and
// every password and value added to the build's masker. Files go in the build's private tmpfs
// directory, which remove() deletes.
import { chmod, chown } from "node:fs/promises";
import { KilnError } from "../errors/kiln-error.js";
import type { BuildSpec } from "../validate/build-request.js";
import { createRegistryCredentials, readAuthFile, type RegistryCredentials } from "../registry/credentials.js";
import type { SecretDigester } from "./cache-key.js";
import type { Masker } from "./masker.js";
import type { SecretDir, SecretRoot } from "./secret-dir.js";

export interface BuildSecrets {
  credentials: RegistryCredentials;
  /** REGISTRY_AUTH_FILE for podman and buildah, when there are credentials. */
  env: Record<string, string>;
  /** id -> digest of its value: part of the fast path's key. */
  digests: Map<string, string>;
  /** The Containerfile with its secret mounts keyed on their values, and buildah's --secret list. */
  mounts(text: string, file: string): Promise<{ text: string; secrets: { id: string; src: string }[]; used: string[] }>;
  /** A file holding the secret for a RUN step kiln runs, with the mount's mode and owner (buildah's copy of it). */
  runFile(id: string, mode: number, uid: number, gid: number): Promise<string>;
  remove(): Promise<void>;
}

export interface BuildSecretsDeps {
  root: SecretRoot;
  /** kilnd's --registry-auth-file. */
  authFile: string | undefined;
  digest: SecretDigester;
  env: Record<string, string>;
}

export async function prepareBuildSecrets(buildId: string, spec: BuildSpec, masker: Masker, d: BuildSecretsDeps): Promise<BuildSecrets> {
  const machine = await readAuthFile(d.authFile);
  const credentials = createRegistryCredentials(machine, spec.registryCredentials, d.env, (p) => masker.add(p));
  masker.add(...credentials.passwords);
  const digests = new Map(Object.entries(spec.secrets).map(([id, v]) => [id, d.digest(id, v)]));
  let dir: SecretDir | undefined;
  const openDir = async () => (dir ??= await d.root.open(buildId));
  const env: Record<string, string> = {};
  let runFiles = 0;
  try {
    if (spec.registryCredentials.length > 0) {
      env.REGISTRY_AUTH_FILE = await (await openDir()).write("auth.json", JSON.stringify(credentials.authFile()));
    } else if (d.authFile) {
      env.REGISTRY_AUTH_FILE = d.authFile;
    }
  } catch (e) {
    await dir?.remove();
    throw e;
  }
  return {
    credentials,
    env,
    digests,
    async mounts(text, file) {
      // The Containerfile parser is loaded on first use, not at kilnd's start.
      const { planSecretMounts } = await import("./secret-mounts.js");
      const plan = planSecretMounts(text, digests, file);
      const secrets: { id: string; src: string }[] = [];
      let n = 0;
      for (const [fileId, id] of plan.renamed) {
        const src = await (await openDir()).write(`secret-${n++}`, spec.secrets[id]!);
        secrets.push({ id: fileId, src });
      }
      return { text: plan.text, secrets, used: [...plan.used] };
    },
    async runFile(id, mode, uid, gid) {
      const value = spec.secrets[id];
      if (value === undefined) throw new KilnError("internal", `no secret ${JSON.stringify(id)} in the request`);
      const file = await (await openDir()).write(`run-${runFiles++}`, value);
      await chown(file, uid, gid);
      await chmod(file, mode);
      return file;
    },
    async remove() {
      await dir?.remove();
    },
  };
}
