// HOST:PORT as kiln's flags and configs write it ([::1]:5456 for IPv6; an empty host is every
// address). One parser for kilnd's --listen, the scheduler's listen and the addresses kilnds say.
import { usageError } from "../errors/kiln-error.js";

export interface HostPort {
  host: string;
  port: number;
}

/** Throws an invalid_argument KilnError naming what (a flag or a config key). */
export function parseHostPort(raw: string, what: string): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(raw);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw usageError(`${what}: ${JSON.stringify(raw)} is not HOST:PORT`);
  const host = m[1] ?? m[2] ?? "";
  return { host: host === "" ? "0.0.0.0" : host, port };
}
