// kiln-scheduler assembled: the webhook route and the SchedulerService on one port.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { SchedulerService } from "../gen/kiln/v1/scheduler_pb.js";
import { createTokenAuth } from "../server/auth.js";
import { checkBinaryRequests } from "../server/binary-check.js";
import { errorInterceptor } from "../server/errors.js";
import { startServer, type KilnServer } from "../server/http-server.js";
import type { SchedulerConfig } from "./config.js";
import { parseHostPort } from "../util/host-port.js";
import { ProjectAdmin } from "./project-admin.js";
import { Scheduler, type SchedulerOptions } from "./scheduler.js";
import { createSchedulerService } from "./service.js";

const MAX_WEBHOOK_BYTES = 25 * 1024 * 1024; // GitHub caps payloads at 25 MB

async function readBody(req: IncomingMessage | Http2ServerRequest): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_WEBHOOK_BYTES) return undefined;
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

export interface RunningScheduler {
  scheduler: Scheduler;
  server: KilnServer;
  stop(): Promise<void>;
}

export async function startScheduler(cfg: SchedulerConfig, logger: Logger, opts: SchedulerOptions = {}): Promise<RunningScheduler> {
  const scheduler = new Scheduler(cfg, logger, opts);
  await scheduler.start();
  const auth = cfg.tokenFile ? createTokenAuth(cfg.tokenFile, logger) : undefined;
  const handler = connectNodeAdapter({
    routes: (router) => {
      router.service(SchedulerService, createSchedulerService(scheduler, new ProjectAdmin(cfg, scheduler, logger)));
      checkBinaryRequests(router, 4 * 1024 * 1024);
    },
    interceptors: [errorInterceptor(logger), ...(auth ? [auth.interceptor] : [])],
    readMaxBytes: 4 * 1024 * 1024,
    writeMaxBytes: 4 * 1024 * 1024,
    fallback(req, res) {
      const reply = (status: number, body: Record<string, unknown>) => {
        (res as ServerResponse | Http2ServerResponse).writeHead(status, { "content-type": "application/json" });
        res.end(`${JSON.stringify(body)}\n`);
      };
      const path = (req.url ?? "/").split("?")[0];
      if (path === "/healthz") return reply(200, { ok: true });
      if (path !== "/webhooks/github") return reply(404, { error: "not found" });
      if (req.method !== "POST") return reply(405, { error: "POST only" });
      void (async () => {
        const body = await readBody(req);
        if (!body) return reply(413, { error: "payload too large" });
        const one = (h: string | string[] | undefined) => (Array.isArray(h) ? h[0] : h);
        const sig = one(req.headers["x-hub-signature-256"]);
        const event = one(req.headers["x-github-event"]);
        const delivery = one(req.headers["x-github-delivery"]);
        const r = await scheduler.webhook(body, { ...(sig ? { signature: sig } : {}), ...(event ? { event } : {}), ...(delivery ? { delivery } : {}) });
        reply(r.status, r.body);
      })().catch((err) => {
        logger.error({ err }, "webhook failed");
        reply(500, { error: "internal error" });
      });
    },
  });
  const listen = parseHostPort(cfg.listen, "listen");
  const server = await startServer({ host: listen.host, port: listen.port, handler });
  logger.info({ listen: `${server.address.host}:${server.address.port}`, projects: cfg.projects.map((p) => `${p.name} (${p.machine.driver})`), store: cfg.database ? "postgres" : "files", replica: scheduler.store.replica }, "kiln-scheduler serving");
  return {
    scheduler,
    server,
    async stop() {
      await server.close(2000);
      await auth?.close();
      await scheduler.close();
    },
  };
}
