// The one client of kilnd's API (and of the scheduler's) that kiln's own parts use (the CLI, the scheduler, the tests and
// the bench): the Connect protocol over HTTP/1.1, with the bearer token when there is one. The
// token may be a function, read at every call, so that a rotated token file takes effect.
import { readFileSync } from "node:fs";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { BuilderService } from "../gen/kiln/v1/builder_pb.js";
import { SchedulerService } from "../gen/kiln/v1/scheduler_pb.js";

export type KilndClient = Client<typeof BuilderService>;

export type TokenSource = string | undefined | (() => string | undefined);

/** A client of one of kiln's services (kilnd's, the scheduler's). */
export function connectClient<S extends DescService>(service: S, baseUrl: string, token?: TokenSource): Client<S> {
  const auth: Interceptor = (next) => (req) => {
    const t = typeof token === "function" ? token() : token;
    if (t) req.header.set("authorization", `Bearer ${t}`);
    return next(req);
  };
  return createClient(service, createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [auth] }));
}

export const kilndClient = (baseUrl: string, token?: TokenSource): KilndClient => connectClient(BuilderService, baseUrl, token);

export type SchedulerClient = Client<typeof SchedulerService>;

export const schedulerClient = (baseUrl: string, token?: TokenSource): SchedulerClient => connectClient(SchedulerService, baseUrl, token);

/** A token file, read at every call. */
export const tokenFile = (file: string): (() => string) => () => readFileSync(file, "utf8").trim();

/** The CLI's token: --token-file, else $KILN_TOKEN_FILE, else $KILN_TOKEN. */
export function tokenFrom(file: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  if (file) return tokenFile(file)();
  if (env.KILN_TOKEN_FILE) return tokenFile(env.KILN_TOKEN_FILE)();
  return env.KILN_TOKEN || undefined;
}
