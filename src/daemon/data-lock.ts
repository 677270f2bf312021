// One kilnd per data directory. Two on one volume would kill each other's podman processes at
// start-up (recovery ends every process with the volume's storage configuration) and write the
// same records. The lock is a Linux abstract socket named after the directory's device and inode:
// the kernel lets one process bind it, and frees it when that process dies, however it dies (no
// stale lock after a kill -9). The socket also answers who holds it: the local driver asks it for
// the address of a kilnd already serving a volume instead of starting a second one.
// Abstract sockets belong to a network namespace: the lock covers the kilnds of one machine,
// which is all a volume can be attached to (a Fly volume is mounted by one machine at a time).
import { stat } from "node:fs/promises";
import net from "node:net";
import { KilnError } from "../errors/kiln-error.js";

export interface LockHolder {
  pid: number;
  /** host:port kilnd answers on, once it serves. */
  listen?: string;
}

export interface DataLock {
  /** Tells askers where this kilnd serves. */
  serving(listen: string): void;
  release(): Promise<void>;
}

const socketName = async (dataDir: string) => {
  const st = await stat(dataDir);
  return `\0kilnd-data-${st.dev}-${st.ino}`;
};

/** Takes the data directory's lock, or throws KilnError already_exists naming the holder. */
export async function lockDataDir(dataDir: string): Promise<DataLock> {
  const name = await socketName(dataDir);
  const me: LockHolder = { pid: process.pid };
  const server = net.createServer((sock) => {
    sock.on("error", () => sock.destroy());
    sock.end(`${JSON.stringify(me)}\n`);
  });
  server.unref();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ path: name, exclusive: true }, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EADDRINUSE") throw e;
    const holder = await askHolder(name);
    const who = holder ? `kilnd pid ${holder.pid}${holder.listen ? `, serving on ${holder.listen}` : ""}` : "another kilnd";
    throw new KilnError("already_exists", `the data directory ${dataDir} is in use by ${who}: one kilnd per volume`);
  }
  return {
    serving(listen) {
      me.listen = listen;
    },
    release: () => new Promise((res) => server.close(() => res())),
  };
}

/** The kilnd holding dataDir's lock, or undefined when none does. */
export async function dataDirHolder(dataDir: string): Promise<LockHolder | undefined> {
  try {
    return await askHolder(await socketName(dataDir));
  } catch {
    return undefined; // no such directory yet
  }
}

function askHolder(name: string): Promise<LockHolder | undefined> {
  return new Promise((resolve) => {
    let text = "";
    const sock = net.connect({ path: name });
    sock.setTimeout(2000, () => sock.destroy());
    sock.on("data", (d) => (text += d));
    sock.on("error", () => resolve(undefined));
    sock.on("close", () => {
      try {
        const v = JSON.parse(text) as LockHolder;
        resolve(typeof v.pid === "number" ? v : undefined);
      } catch {
        resolve(undefined);
      }
    });
  });
}
