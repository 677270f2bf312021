// The kiln CLI's connection to kilnd: the Connect protocol over HTTP/1.1, with the bearer token.
import { readFileSync } from "node:fs";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { BuilderService } from "../gen/kiln/v1/builder_pb.js";

export type BuilderClient = Client<typeof BuilderService>;

export function connect(addr: string, token: string | undefined): BuilderClient {
  const auth: Interceptor = (next) => (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  return createClient(BuilderService, createConnectTransport({ baseUrl: addr, httpVersion: "1.1", interceptors: [auth] }));
}

export function tokenFrom(file: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  if (file) return readFileSync(file, "utf8").trim();
  if (env.KILN_TOKEN_FILE) return readFileSync(env.KILN_TOKEN_FILE, "utf8").trim();
  return env.KILN_TOKEN || undefined;
}
