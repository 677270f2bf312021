// A small client for the OCI distribution API: what kiln's fast path needs to read the image of
// the last full build and to push a new image made of its layers and one new layer. It answers
// a registry's Basic or Bearer challenge with the build's credentials (registry/auth.ts); plain
// HTTP for the registries kilnd was told are insecure, HTTPS otherwise. Every call stops when
// the build's signal aborts.
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { createRegistryAuth, RegistryAuthError, type RegistryAuth } from "./auth.js";
import type { Credential } from "./credentials.js";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
export const DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/** Image manifests kiln reads and writes: OCI, and Docker's schema 2 (what --image-format docker pushes). */
const IMAGE_MANIFESTS = new Set([OCI_MANIFEST, DOCKER_MANIFEST]);
// Every manifest kind a base image may have: a pull resolves the same digest.
const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  OCI_MANIFEST,
  DOCKER_MANIFEST,
].join(", ");

export class RegistryError extends Error {}

export interface RegistryClientOptions {
  /** The credentials for this repository, if it needs any. */
  credential?: () => Promise<Credential | undefined>;
  signal?: AbortSignal;
  /** Repositories of the same registry blobs are mounted from (mountBlob): its tokens may read them too. */
  mountFrom?: readonly string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface OciManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export const sha256 = (data: Uint8Array | string) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

const TIMEOUT_MS = 30_000;
/** A base layer's download (tens of MB, maybe from far away). */
const BLOB_STREAM_TIMEOUT_MS = 10 * 60_000;
const MAX_AUTH_RETRIES = 2;

export class RegistryClient {
  private readonly base: string;
  private readonly auth: RegistryAuth;
  private readonly signal: AbortSignal | undefined;

  /** host is host[:port]; repo is the repository path on it (team/app). */
  constructor(
    private readonly host: string,
    private readonly repo: string,
    insecure: boolean,
    o: RegistryClientOptions = {},
  ) {
    this.base = `${insecure ? "http" : "https"}://${host}/v2/${repo}`;
    this.signal = o.signal;
    this.auth = createRegistryAuth({ registry: host, credential: o.credential ?? (async () => undefined), scope: [`repository:${repo}:pull,push`, ...(o.mountFrom ?? []).map((r) => `repository:${r}:pull`)].join(" "), insecure });
  }

  async getManifest(reference: string): Promise<{ manifest: OciManifest; bytes: Buffer; digest: string }> {
    const got = await this.readManifest(reference, [...IMAGE_MANIFESTS].join(", "));
    const manifest = got.json as OciManifest;
    if (!IMAGE_MANIFESTS.has(got.mediaType)) throw new RegistryError(`${this.repo}@${reference} is a ${got.mediaType || "manifest of no type"}, not an image manifest`);
    manifest.mediaType = got.mediaType;
    return { manifest, bytes: got.bytes, digest: got.digest };
  }

  /** A manifest or an index, whichever the reference names, as JSON with its media type. */
  async getAnyManifest(reference: string): Promise<{ mediaType: string; json: unknown; digest: string }> {
    const got = await this.readManifest(reference, MANIFEST_TYPES);
    if (reference.startsWith("sha256:") && got.digest !== reference) throw new RegistryError(`${this.repo}@${reference}: the manifest does not match its digest`);
    return got;
  }

  /** A blob as a stream, not checked here: the reader hashes what it reads. */
  async blobStream(digest: string): Promise<Readable> {
    const res = await this.call("GET", `/blobs/${digest}`, { timeoutMs: BLOB_STREAM_TIMEOUT_MS }, [200]);
    if (!res.body) throw new RegistryError(`GET blob ${digest}: no body`);
    return Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
  }

  /** The digest a tag points to now (one HEAD), or undefined when the registry has no such tag. */
  async headManifest(reference: string): Promise<string | undefined> {
    const res = await this.call("HEAD", `/manifests/${reference}`, { headers: { accept: MANIFEST_TYPES } }, [200, 404]);
    if (res.status === 404) return undefined;
    const digest = res.headers.get("docker-content-digest");
    if (digest) return digest;
    const got = await this.call("GET", `/manifests/${reference}`, { headers: { accept: MANIFEST_TYPES } }, [200]);
    return sha256(Buffer.from(await got.arrayBuffer()));
  }

  /** A blob, checked against its digest. */
  async getBlob(digest: string): Promise<Buffer> {
    const res = await this.call("GET", `/blobs/${digest}`, {}, [200]);
    const bytes = Buffer.from(await res.arrayBuffer());
    if (sha256(bytes) !== digest) throw new RegistryError(`blob ${digest} from ${this.repo} does not match its digest`);
    return bytes;
  }

  async hasBlob(digest: string): Promise<boolean> {
    const res = await this.call("HEAD", `/blobs/${digest}`, {}, [200, 404]);
    return res.status === 200;
  }

  /** Uploads a blob unless the repository has it; timeoutMs: the upload's own deadline (30 s when not given). */
  async putBlob(digest: string, data: Uint8Array, timeoutMs?: number): Promise<void> {
    if (await this.hasBlob(digest)) return;
    const started = await this.call("POST", "/blobs/uploads/", {}, [202]);
    const location = started.headers.get("location");
    if (!location) throw new RegistryError("the registry started an upload without a Location");
    const url = new URL(location, this.base);
    url.searchParams.set("digest", digest);
    await this.call("PUT", url, { body: data, headers: { "content-type": "application/octet-stream" }, ...(timeoutMs ? { timeoutMs } : {}) }, [201]);
  }

  /**
   * Has the registry link a blob of another of its repositories into this one (the distribution
   * spec's cross-repository mount): false when it started an upload instead (it does when the
   * blob is not there, or the credentials may not read that repository), which is then cancelled.
   */
  async mountBlob(digest: string, from: string): Promise<boolean> {
    const res = await this.call("POST", `/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`, {}, [201, 202]);
    if (res.status === 201) return true;
    const location = res.headers.get("location");
    if (location) await this.call("DELETE", new URL(location, this.base), {}, [204, 404]).catch(() => undefined);
    return false;
  }

  /**
   * Tags the manifest; returns its digest as the registry computed it. Not stopped by the
   * signal: once sent, the tag may be the registry's whatever kiln does, so kiln waits to know.
   */
  async putManifest(tag: string, bytes: Buffer, mediaType = OCI_MANIFEST): Promise<string> {
    const res = await this.call("PUT", `/manifests/${tag}`, { body: bytes, headers: { "content-type": mediaType }, uncancellable: true }, [201]);
    const ours = sha256(bytes);
    const theirs = res.headers.get("docker-content-digest");
    if (theirs && theirs !== ours) throw new RegistryError(`the registry stored the manifest as ${theirs}, kiln computed ${ours}`);
    return ours;
  }

  /** GET of a manifest of the kinds accept names: its bytes, JSON, media type and digest. */
  private async readManifest(reference: string, accept: string): Promise<{ bytes: Buffer; json: unknown; mediaType: string; digest: string }> {
    const res = await this.call("GET", `/manifests/${reference}`, { headers: { accept } }, [200]);
    const bytes = Buffer.from(await res.arrayBuffer());
    const json = JSON.parse(bytes.toString("utf8")) as { mediaType?: string };
    return { bytes, json, mediaType: json.mediaType ?? res.headers.get("content-type") ?? "", digest: sha256(bytes) };
  }

  private async call(method: string, path: string | URL, init: { body?: Uint8Array; headers?: Record<string, string>; uncancellable?: boolean; timeoutMs?: number }, ok: number[]): Promise<Response> {
    const signal = init.uncancellable ? undefined : this.signal;
    const url = typeof path === "string" ? `${this.base}${path}` : path;
    // At most three times: after a 401, with the credentials or token it asked for, and once
    // more with a fresh token if that one was refused too (it expired before it was used).
    for (let attempt = 0; ; attempt++) {
      const headers = { ...init.headers };
      const authorization = await this.auth.header().catch((e) => this.fail(method, url, e));
      if (authorization) headers.authorization = authorization;
      let res: Response;
      try {
        const timeout = AbortSignal.timeout(init.timeoutMs ?? TIMEOUT_MS);
        res = await fetch(url, { method, body: init.body, headers, signal: signal ? AbortSignal.any([signal, timeout]) : timeout, redirect: "follow" });
      } catch (e) {
        this.fail(method, url, e);
      }
      if (res.status === 401 && attempt < MAX_AUTH_RETRIES) {
        await res.arrayBuffer().catch(() => undefined);
        const retry = await this.auth.challenged(res.headers.get("www-authenticate"), authorization, signal).catch((e) => this.fail(method, url, e));
        if (retry) continue;
        throw new RegistryAuthError(`registry ${this.host} refused ${method} ${this.repo} (HTTP 401: no credentials, or wrong ones)`, 401);
      }
      if (!ok.includes(res.status)) {
        const text = method === "HEAD" ? "" : (await res.text().catch(() => "")).slice(0, 300);
        if (res.status === 401 || res.status === 403) {
          throw new RegistryAuthError(`registry ${this.host} refused ${method} ${this.repo} (HTTP ${res.status}${res.status === 401 ? ": no credentials, or wrong ones" : ": not allowed for these credentials"})`, res.status);
        }
        throw new RegistryError(`${method} ${shownUrl(url)}: HTTP ${res.status} ${text}`.trim());
      }
      // Only GET answers are read by the caller; the rest are drained so the connection is reused.
      if (method !== "GET") await res.arrayBuffer().catch(() => undefined);
      return res;
    }
  }

  private fail(method: string, url: string | URL, e: unknown): never {
    if (this.signal?.aborted) throw this.signal.reason ?? e;
    if (e instanceof RegistryAuthError || e instanceof RegistryError) throw e;
    throw new RegistryError(`${method} ${shownUrl(url)}: ${(e as Error).message}`);
  }
}

/** A URL for an error message: without its query (an upload's state, its digest: long, and nothing a reader needs). */
const shownUrl = (url: string | URL) => {
  const u = new URL(url);
  return `${u.origin}${u.pathname}`;
};
