// Image repositories as a build request names them: [registry-host[:port]/]path, no tag, no digest.
import { invalidArgument } from "../errors/kiln-error.js";

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?$/;
const MAX_REF = 255;

export interface ImageRepo {
  /** The repository as given, e.g. registry.example:5000/acme/gw. */
  repository: string;
  /** The registry host[:port], when the reference names one; images without one stay local. */
  registry?: string;
}

export function parseImageRepo(value: string, field = "image"): ImageRepo {
  if (value.length > MAX_REF) throw invalidArgument(field, `is longer than ${MAX_REF} characters`);
  if (value.includes("@")) throw invalidArgument(field, "must not carry a digest; kiln tags the image with the commit SHA");
  const parts = value.split("/");
  let registry: string | undefined;
  const first = parts[0] ?? "";
  if (parts.length > 1 && (first.includes(".") || first.includes(":") || first.startsWith("["))) {
    if (!HOST.test(first)) throw invalidArgument(field, `registry host ${JSON.stringify(first)} is not a host[:port]`);
    registry = first;
    parts.shift();
  } else if (parts.length > 1 && first === "localhost") {
    parts.shift(); // podman's local namespace: never pushed
  }
  const last = parts[parts.length - 1] ?? "";
  if (last.includes(":")) throw invalidArgument(field, "must not carry a tag; kiln tags the image with the commit SHA");
  if (parts.length === 0 || parts.some((p) => !COMPONENT.test(p))) {
    throw invalidArgument(field, `${JSON.stringify(value)} is not an image repository (lowercase path components like registry.example:5000/team/app)`);
  }
  return registry ? { repository: value, registry } : { repository: value };
}
