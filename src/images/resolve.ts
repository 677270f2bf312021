// Looks each FROM image of a build up at its registry (base-images.ts says which): one HEAD per
// tag, with the build's credentials, stopped by its cancel. A registry's refusal fails the
// build (no credentials would pull it either); a registry that cannot be reached leaves that
// image to buildah's own pull-if-newer.
import { RegistryAuthError } from "../registry/auth.js";
import { RegistryClient } from "../registry/client.js";
import type { RegistryCredentials } from "../registry/credentials.js";
import { KilnError } from "../errors/kiln-error.js";
import { authRefusal } from "../registry/refusal.js";
import { fromLines, parseImageName, pinFromLines } from "./base-images.js";

export interface ResolvedBases {
  /** Each FROM image (as expanded) and the digest it is built on. */
  images: { reference: string; digest: string }[];
  /** FROM images kiln could not resolve (and why): no fast path. */
  unresolved: string[];
  /** Some of them name a registry (or may): buildah is to pull them when newer. */
  pullIfNewer: boolean;
  /** The Containerfile text with every resolved FROM pinned to its digest (offsets of this text). */
  pin(text: string): string;
}

export async function resolveBases(
  text: string,
  buildArgs: Record<string, string>,
  o: { credentials: RegistryCredentials; insecure: ReadonlySet<string>; signal: AbortSignal },
): Promise<ResolvedBases> {
  const digests = new Map<string, string>();
  const unresolved: string[] = [];
  let pullIfNewer = false;
  for (const line of fromLines(text, buildArgs)) {
    if (line.notImage) continue;
    if (!line.image) {
      unresolved.push(`${line.written} (an ARG kiln cannot expand)`);
      pullIfNewer = true;
      continue;
    }
    if (digests.has(line.image)) continue;
    const name = parseImageName(line.image);
    if (!name) {
      // A local image (localhost/…, or a name without a registry host): used as storage has it.
      unresolved.push(`${line.image} (a local image: no registry to ask)`);
      continue;
    }
    if (name.digest) {
      digests.set(line.image, name.digest);
      continue;
    }
    const client = new RegistryClient(name.registry, name.repository, o.insecure.has(name.registry), {
      credential: () => o.credentials.lookup(name.registry, name.repository),
      signal: o.signal,
    });
    try {
      const digest = await client.headManifest(name.tag);
      if (!digest) throw new KilnError("failed_precondition", `FROM ${line.image}: the registry ${name.registry} has no such image`);
      digests.set(line.image, digest);
    } catch (e) {
      if (o.signal.aborted) throw e;
      if (e instanceof KilnError) throw e;
      if (e instanceof RegistryAuthError) throw authRefusal(e, `FROM ${line.image}: `);
      unresolved.push(`${line.image} (${(e as Error).message})`);
      pullIfNewer = true;
    }
  }
  return {
    images: [...digests].map(([reference, digest]) => ({ reference, digest })),
    unresolved,
    pullIfNewer,
    pin(t) {
      const pins = fromLines(t, buildArgs).flatMap((line) => {
        const digest = line.image && !line.notImage && !parseImageName(line.image)?.digest ? digests.get(line.image) : undefined;
        return digest ? [{ line, digest }] : [];
      });
      return pinFromLines(t, pins);
    },
  };
}
