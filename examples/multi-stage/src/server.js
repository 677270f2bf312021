// hello-node: a small HTTP service. GET / greets (JSON or HTML), GET /healthz answers ok.
"use strict";
const http = require("node:http");
const escapeHtml = require("escape-html");
const ms = require("ms");
const { nanoid } = require("nanoid");
const pc = require("picocolors");
const { greeting } = require("./greeting");

const started = Date.now();
const port = Number(process.env.PORT || 8080);

function handle(req, res) {
  const id = nanoid(10);
  const url = new URL(req.url, "http://localhost");
  if (url.pathname === "/healthz") {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
  } else if (url.pathname === "/") {
    const name = url.searchParams.get("name") || "world";
    const body = { id, message: greeting(name), uptime: ms(Date.now() - started) };
    if ((req.headers.accept || "").includes("text/html")) {
      res.writeHead(200, { "content-type": "text/html" }).end(`<h1>${escapeHtml(body.message)}</h1>\n`);
    } else {
      res.writeHead(200, { "content-type": "application/json" }).end(`${JSON.stringify(body)}\n`);
    }
  } else {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  }
  console.log(`${pc.dim(id)} ${req.method} ${url.pathname} ${res.statusCode}`);
}

if (process.argv.includes("--selftest")) {
  // Used by kiln's demo to check the built image really runs: one request to itself, then exit.
  const server = http.createServer(handle).listen(0, "127.0.0.1", () => {
    http.get({ port: server.address().port, path: "/?name=kiln" }, (res) => {
      let data = "";
      res.on("data", (d) => (data += d)).on("end", () => {
        process.stdout.write(data);
        server.close();
      });
    });
  });
} else {
  http.createServer(handle).listen(port, () => console.log(pc.green(`hello-node listening on :${port}`)));
}
