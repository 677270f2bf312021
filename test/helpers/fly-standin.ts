// A stand-in for the Fly Machines API, for testing the fly driver and provisioning here (Fly
// cannot be reached). It follows the documented endpoints and behaviour: bearer auth (401
// otherwise), JSON {"error": ...} bodies;
//   machines: POST /v1/apps/{app}/machines (config.image required, mounts of existing unattached
//   volumes; launched unless skip_launch), GET .../machines/{id}, POST .../start, POST .../stop,
//   GET .../wait?state=&timeout=[&instance_id=] (blocks up to timeout seconds, then 408),
//   DELETE .../machines/{id}[?force=true] (a started machine needs force), state conflicts
//   answered with 409/412;
//   volumes: POST /v1/apps/{app}/volumes (name, size_gb, region), GET and DELETE
//   .../volumes/{id} (an attached volume cannot be destroyed).
// Tests script the first machine's states and inject failures.
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";

export type MachineState = "created" | "starting" | "started" | "stopping" | "stopped" | "replacing" | "destroying" | "destroyed";

export interface StandInMachine {
  id: string;
  name: string;
  region: string;
  instance_id: string;
  state: MachineState;
  config: Record<string, unknown>;
}

export interface StandInVolume {
  id: string;
  name: string;
  region: string;
  size_gb: number;
  state: "created" | "destroyed";
  attached_machine_id: string | null;
}

export interface FlyStandIn {
  url: string;
  /** The first machine's state. */
  state: MachineState;
  /** How long "starting" lasts before "started". */
  bootMs: number;
  /** Answers for the next start calls (then normal behaviour): an HTTP status and error text. */
  startFailures: Array<{ status: number; error: string }>;
  /** When true, a started machine never reaches "started" (waits time out). */
  neverBoots: boolean;
  requests: string[];
  machines: Map<string, StandInMachine>;
  volumes: Map<string, StandInVolume>;
  close(): Promise<void>;
}

const hex = (n: number) => randomBytes(n).toString("hex");

export async function startFlyStandIn(token: string, app: string, machineId: string): Promise<FlyStandIn> {
  const waiters = new Set<() => void>();
  const machines = new Map<string, StandInMachine>();
  const volumes = new Map<string, StandInVolume>();
  const changed = () => {
    for (const w of waiters) w();
  };
  const setState = (m: StandInMachine, s: MachineState) => {
    m.state = s;
    changed();
  };
  const first: StandInMachine = { id: machineId, name: "builder", region: "ams", instance_id: hex(8), state: "stopped", config: {} };
  machines.set(machineId, first);
  const fly: FlyStandIn = {
    url: "",
    get state() {
      return first.state;
    },
    set state(s: MachineState) {
      setState(first, s);
    },
    bootMs: 100,
    startFailures: [],
    neverBoots: false,
    requests: [],
    machines,
    volumes,
    close: () => new Promise((r) => server.close(() => r())),
  };
  const boot = (m: StandInMachine) => {
    setState(m, "starting");
    if (!fly.neverBoots) setTimeout(() => setState(m, "started"), fly.bootMs);
  };
  const readJson = async (req: import("node:http").IncomingMessage): Promise<Record<string, unknown> | undefined> => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    try {
      const v = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as unknown;
      return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  };
  const server: Server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? "/", "http://x");
      fly.requests.push(`${req.method} ${url.pathname}${url.search}`);
      const send = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (req.headers.authorization !== `Bearer ${token}`) return send(401, { error: "unauthorized" });
      const appBase = `/v1/apps/${app}`;
      if (!url.pathname.startsWith(`${appBase}/`)) return send(404, { error: "app not found" });
      const rest = url.pathname.slice(appBase.length).split("/").filter(Boolean);

      if (rest[0] === "volumes") {
        if (rest.length === 1 && req.method === "POST") {
          const body = await readJson(req);
          const name = body?.name;
          const size = body?.size_gb;
          if (typeof name !== "string" || !/^[a-z0-9_]{1,30}$/.test(name)) return send(400, { error: "name: lowercase letters, digits and underscores, at most 30" });
          if (typeof size !== "number" || size < 1) return send(400, { error: "size_gb is required" });
          const v: StandInVolume = { id: `vol_${hex(8)}`, name, region: String(body?.region ?? "ams"), size_gb: size, state: "created", attached_machine_id: null };
          volumes.set(v.id, v);
          return send(200, v);
        }
        const v = volumes.get(rest[1] ?? "");
        if (!v || v.state === "destroyed") return send(404, { error: "volume not found" });
        if (rest.length === 2 && req.method === "GET") return send(200, v);
        if (rest.length === 2 && req.method === "DELETE") {
          if (v.attached_machine_id && machines.has(v.attached_machine_id)) return send(412, { error: `failed_precondition: volume is attached to machine ${v.attached_machine_id}` });
          v.state = "destroyed";
          return send(200, v);
        }
        return send(404, { error: "not found" });
      }

      if (rest[0] !== "machines") return send(404, { error: "not found" });
      if (rest.length === 1 && req.method === "POST") {
        const body = await readJson(req);
        const config = body?.config as Record<string, unknown> | undefined;
        if (!config || typeof config.image !== "string" || !config.image) return send(422, { error: "config.image is required" });
        const id = hex(7);
        for (const mount of (config.mounts as Array<{ volume?: string; path?: string }> | undefined) ?? []) {
          const v = volumes.get(mount.volume ?? "");
          if (!v || v.state === "destroyed") return send(422, { error: `volume ${mount.volume} not found` });
          if (v.attached_machine_id) return send(422, { error: `volume ${v.id} is attached to machine ${v.attached_machine_id}` });
          if (!mount.path?.startsWith("/")) return send(422, { error: "mounts: path is required" });
        }
        for (const mount of (config.mounts as Array<{ volume: string }> | undefined) ?? []) volumes.get(mount.volume)!.attached_machine_id = id;
        const m: StandInMachine = { id, name: String(body?.name ?? id), region: String(body?.region ?? "ams"), instance_id: hex(8), state: "created", config };
        machines.set(id, m);
        if (body?.skip_launch !== true) boot(m);
        return send(200, m);
      }
      const m = machines.get(rest[1] ?? "");
      if (!m) return send(404, { error: "machine not found" });
      const action = rest[2];
      if (!action && req.method === "GET") return send(200, m);
      if (!action && req.method === "DELETE") {
        if ((m.state === "started" || m.state === "starting") && url.searchParams.get("force") !== "true") return send(412, { error: "failed_precondition: machine still active, refusing to delete" });
        machines.delete(m.id);
        setState(m, "destroyed");
        for (const v of volumes.values()) if (v.attached_machine_id === m.id) v.attached_machine_id = null;
        return send(200, { ok: true });
      }
      if (action === "start" && req.method === "POST") {
        const fail = m === first ? fly.startFailures.shift() : undefined;
        if (fail) return send(fail.status, { error: fail.error });
        if (m.state === "replacing" || m.state === "destroying") return send(412, { error: `failed_precondition: machine is ${m.state}` });
        if (m.state === "stopping") return send(409, { error: "machine is stopping, try again" });
        const previous = m.state;
        if (previous === "stopped" || previous === "created") boot(m);
        return send(200, { previous_state: previous });
      }
      if (action === "stop" && req.method === "POST") {
        if (m.state === "started" || m.state === "starting") {
          setState(m, "stopping");
          setTimeout(() => setState(m, "stopped"), 20);
        }
        return send(200, { ok: true });
      }
      if (action === "wait" && req.method === "GET") {
        const want = url.searchParams.get("state") ?? "started";
        const instance = url.searchParams.get("instance_id");
        if (instance && instance !== m.instance_id) return send(400, { error: "instance_id does not match" });
        const timeout = Number(url.searchParams.get("timeout") ?? 60) * 1000;
        if (m.state === want) return send(200, { ok: true });
        const timer = setTimeout(() => {
          waiters.delete(check);
          send(408, { error: "deadline_exceeded: timeout waiting for machine to be " + want });
        }, timeout);
        const check = () => {
          if (m.state !== want) return;
          clearTimeout(timer);
          waiters.delete(check);
          send(200, { ok: true });
        };
        waiters.add(check);
        return;
      }
      send(404, { error: "not found" });
    })();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  fly.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return fly;
}
