// ts-service: a small HTTP service in TypeScript. GET / greets (JSON or HTML), GET /healthz answers ok.
import http from "node:http";
import escapeHtml from "escape-html";
import ms from "ms";
import { greeting } from "./greeting";

const started = Date.now();
const port = Number(process.env.PORT || 8080);

function handle(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? "/", "http://localhost");
  if (url.pathname === "/healthz") {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
  } else if (url.pathname === "/") {
    const name = url.searchParams.get("name") || "world";
    const body = { message: greeting(name), uptime: ms(Date.now() - started) };
    if ((req.headers.accept ?? "").includes("text/html")) {
      res.writeHead(200, { "content-type": "text/html" }).end(`<h1>${escapeHtml(body.message)}</h1>\n`);
    } else {
      res.writeHead(200, { "content-type": "application/json" }).end(`${JSON.stringify(body)}\n`);
    }
  } else {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  }
}

http.createServer(handle).listen(port, () => console.log(`listening on ${port}`));
