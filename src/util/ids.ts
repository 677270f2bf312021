// Record ids (builds, deployments): time-ordered (so they sort like the records), short, and
// safe in paths and URLs.
import { randomBytes } from "node:crypto";

const TIME_DIGITS = 9;

export function newId(now = Date.now()): string {
  const time = now.toString(36).padStart(TIME_DIGITS, "0");
  const rand = randomBytes(5).toString("hex").slice(0, 8);
  return `${time}-${rand}`;
}

/**
 * An id that sorts after prev, whatever the clock says: a clock that is behind (another
 * replica's) or the same millisecond takes prev's time plus one. Ids made this way under one
 * lock sort in the order they were made.
 */
export function newIdAfter(prev: string | undefined, now = Date.now()): string {
  const prevTime = prev ? parseInt(prev.slice(0, TIME_DIGITS), 36) : NaN;
  return newId(Number.isFinite(prevTime) && prevTime >= now ? prevTime + 1 : now);
}

export const ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,63}$/;
