// Record ids (builds, deployments): time-ordered (so they sort like the records), short, and
// safe in paths and URLs.
import { randomBytes } from "node:crypto";

export function newId(now = Date.now()): string {
  const time = now.toString(36).padStart(9, "0");
  const rand = randomBytes(5).toString("hex").slice(0, 8);
  return `${time}-${rand}`;
}

export const ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,63}$/;
