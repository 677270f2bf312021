// The API's routes: a validated JSON echo and a health check.
"use strict";
const express = require("express");
const { z } = require("zod");
const { version } = require("./version");

const Echo = z.object({ message: z.string().min(1).max(200) });

exports.routes = () => {
  const r = express.Router();
  r.get("/healthz", (_req, res) => res.type("text").send("ok\n"));
  r.get("/version", (_req, res) => res.json({ version }));
  r.post("/echo", express.json(), (req, res) => {
    const parsed = Echo.safeParse(req.body);
    if (!parsed.success) return res.status(400).json({ error: parsed.error.issues[0].message });
    res.json({ echo: parsed.data.message });
  });
  return r;
};
