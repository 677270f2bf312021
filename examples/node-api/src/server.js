// node-api: an Express service with a few hundred dependencies (the S3 client, database and
// cache drivers are loaded at start, as a real service would). --selftest answers one request.
"use strict";
const http = require("node:http");
const express = require("express");
const pino = require("pino");
require("@aws-sdk/client-s3");
require("pg");
require("ioredis");
const { routes } = require("./routes");

const log = pino({ level: process.env.LOG_LEVEL || "info" });
const app = express();
app.use(routes());
const port = Number(process.env.PORT || 8080);

if (process.argv.includes("--selftest")) {
  const server = app.listen(0, "127.0.0.1", () => {
    http.get({ port: server.address().port, path: "/version" }, (res) => {
      let data = "";
      res.on("data", (d) => (data += d)).on("end", () => {
        process.stdout.write(`${data}\n`);
        server.close();
      });
    });
  });
} else {
  app.listen(port, () => log.info({ port }, "node-api listening"));
}
