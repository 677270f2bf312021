// A stand-in for the Fly Machines API, for testing the fly driver here (Fly cannot be reached).
// It follows the documented endpoints and behaviour: bearer auth (401 otherwise), POST .../start,
// GET .../wait?state=&timeout= (blocks up to timeout seconds, then 408), GET the machine, JSON
// {"error": ...} bodies, and state conflicts answered with 409/412. Tests script the machine's
// states and inject failures.
import { createServer, type Server } from "node:http";

export type MachineState = "created" | "starting" | "started" | "stopping" | "stopped" | "replacing" | "destroying";

export interface FlyStandIn {
  url: string;
  state: MachineState;
  /** How long "starting" lasts before "started". */
  bootMs: number;
  /** Answers for the next start calls (then normal behaviour): an HTTP status and error text. */
  startFailures: Array<{ status: number; error: string }>;
  /** When true, a started machine never reaches "started" (waits time out). */
  neverBoots: boolean;
  requests: string[];
  close(): Promise<void>;
}

export async function startFlyStandIn(token: string, app: string, machineId: string): Promise<FlyStandIn> {
  const waiters = new Set<() => void>();
  const fly: FlyStandIn = {
    url: "",
    state: "stopped",
    bootMs: 100,
    startFailures: [],
    neverBoots: false,
    requests: [],
    close: () => new Promise((r) => server.close(() => r())),
  };
  const setState = (s: MachineState) => {
    fly.state = s;
    for (const w of waiters) w();
  };
  const base = `/v1/apps/${app}/machines/${machineId}`;
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    fly.requests.push(`${req.method} ${url.pathname}${url.search}`);
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.headers.authorization !== `Bearer ${token}`) return send(401, { error: "unauthorized" });
    if (url.pathname === base && req.method === "GET") return send(200, { id: machineId, state: fly.state, region: "ams" });
    if (url.pathname === `${base}/start` && req.method === "POST") {
      const fail = fly.startFailures.shift();
      if (fail) return send(fail.status, { error: fail.error });
      if (fly.state === "replacing" || fly.state === "destroying") return send(412, { error: `failed_precondition: machine is ${fly.state}` });
      if (fly.state === "stopping") return send(409, { error: "machine is stopping, try again" });
      const previous = fly.state;
      if (previous === "stopped" || previous === "created") {
        setState("starting");
        if (!fly.neverBoots) setTimeout(() => setState("started"), fly.bootMs);
      }
      return send(200, { previous_state: previous });
    }
    if (url.pathname === `${base}/wait` && req.method === "GET") {
      const want = url.searchParams.get("state") ?? "started";
      const timeout = Number(url.searchParams.get("timeout") ?? 60) * 1000;
      if (fly.state === want) return send(200, { ok: true });
      const timer = setTimeout(() => {
        waiters.delete(check);
        send(408, { error: "deadline_exceeded: timeout waiting for machine to be " + want });
      }, timeout);
      const check = () => {
        if (fly.state !== want) return;
        clearTimeout(timer);
        waiters.delete(check);
        send(200, { ok: true });
      };
      waiters.add(check);
      return;
    }
    send(404, { error: "not found" });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  fly.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return fly;
}
