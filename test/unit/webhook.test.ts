// The webhook's parser and signature check, and the order of a branch's pushes.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { describe, test } from "node:test";
import { PushOrder } from "../../src/scheduler/push-order.js";
import { parseWebhook, verifySignature } from "../../src/scheduler/webhook.js";

const SECRET = "s3cret";
const sign = (body: string, secret = SECRET) => `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
const sha = (c: string, n = 40) => c.repeat(n);
const push = (o: Record<string, unknown> = {}) => JSON.stringify({ ref: "refs/heads/main", after: sha("a"), before: sha("b"), repository: { full_name: "acme/app" }, ...o });
const parse = (body: string, headers: { signature?: string | null; event?: string; delivery?: string } = {}) =>
  parseWebhook(SECRET, Buffer.from(body), {
    ...(headers.signature === null ? {} : { signature: headers.signature ?? sign(body) }),
    event: headers.event ?? "push",
    ...(headers.delivery ? { delivery: headers.delivery } : {}),
  });

describe("webhook signature", () => {
  test("the right HMAC passes; another secret, another body, a malformed header do not", () => {
    const body = Buffer.from(push());
    assert.ok(verifySignature(SECRET, body, sign(push())));
    assert.ok(verifySignature(SECRET, body, sign(push()).toUpperCase().replace("SHA256=", "sha256=")));
    assert.ok(!verifySignature(SECRET, body, sign(push(), "other")));
    assert.ok(!verifySignature(SECRET, Buffer.from(push({ after: sha("c") })), sign(push())));
    for (const h of [undefined, "", "sha1=abc", `sha256=${"0".repeat(63)}`, "sha256=zz"]) assert.ok(!verifySignature(SECRET, body, h));
  });
});

describe("webhook parser", () => {
  test("a push: repository, ref, commit, before and the delivery id", () => {
    assert.deepEqual(parse(push(), { delivery: "72d3162e-cc78-11e3-81ab-4c9367dc0958" }), {
      status: 202,
      push: { repository: "acme/app", ref: "refs/heads/main", commit: sha("a"), before: sha("b"), delivery: "72d3162e-cc78-11e3-81ab-4c9367dc0958" },
    });
  });

  test("SHA-256 repositories' 64-hex commits are taken", () => {
    const r = parse(push({ after: sha("c", 64), before: sha("d", 64) }));
    assert.ok("push" in r && r.push.commit === sha("c", 64) && r.push.before === sha("d", 64));
  });

  test("a new branch (before all zeros) has no before; a deletion is ignored", () => {
    const r = parse(push({ before: sha("0") }));
    assert.ok("push" in r && r.push.before === "");
    assert.match((parse(push({ after: sha("0") })) as { ignored: string }).ignored, /deleted/);
    assert.match((parse(push({ deleted: true })) as { ignored: string }).ignored, /deleted/);
  });

  test("unsigned, wrongly signed, not JSON, not a push, missing fields: each its own answer; nothing unsigned is read", () => {
    assert.equal(parse(push(), { signature: null }).status, 401);
    assert.equal(parse(push(), { signature: sign("other body") }).status, 401);
    assert.equal(parse("{not json", { signature: sign("{not json") }).status, 400);
    assert.match((parse(push(), { event: "ping" }) as { ignored: string }).ignored, /not a push/);
    assert.equal(parse(push({ after: "main" })).status, 400);
    assert.equal(parse(JSON.stringify({ ref: "refs/heads/main" })).status, 400);
    const weird = parse(push(), { delivery: "not a delivery id; with spaces" });
    assert.ok("push" in weird && weird.push.delivery === "", "an odd delivery header is not used as a key");
  });
});

describe("push order", () => {
  test("in order, every push is the new head", () => {
    const o = new PushOrder();
    assert.deepEqual(o.observe("p", "B", "A"), { stale: false });
    assert.deepEqual(o.observe("p", "C", "B"), { stale: false });
  });

  test("an older push delivered after a newer one is stale, however far back the chain reaches it", () => {
    const o = new PushOrder();
    o.observe("p", "D", "C");
    o.observe("p", "C", "B"); // delivered late: C is D's before
    assert.deepEqual(o.observe("p", "C", "B"), { stale: true, newer: "D" });
    assert.deepEqual(o.observe("p", "B", "A"), { stale: true, newer: "C" }, "older than the push that named it as its before");
    assert.deepEqual(o.observe("p", "E", "D"), { stale: false }, "the chain goes on from the head");
  });

  test("a gap or a force push (no link to the head): unsure of the head, which stays until git says otherwise (advance); projects do not mix", () => {
    const o = new PushOrder();
    o.observe("p", "B", "A");
    assert.deepEqual(o.observe("p", "X", "W"), { stale: false, unsureOf: "B" });
    assert.deepEqual(o.observe("q", "B", "A"), { stale: false });
    assert.deepEqual(o.observe("p", "Y", "X"), { stale: false, unsureOf: "B" }, "X is not the head yet");
    assert.deepEqual(o.observe("p", "B", "A"), { stale: false }, "the head itself again");
    o.advance("p", "Y");
    assert.deepEqual(o.observe("p", "Z", "Y"), { stale: false }, "the chain goes on from the head git confirmed");
    assert.deepEqual(o.observe("p", "X", "W"), { stale: true, newer: "Y" }, "X, named by Y's push, is older");
  });

  test("a commit an earlier-delivered push named as its before is older, even across a gap", () => {
    const o = new PushOrder();
    o.observe("p", "D", "C");
    // B's push arrives before C's: nothing links B to D, so git is to be asked...
    assert.deepEqual(o.observe("p", "B", "A"), { stale: false, unsureOf: "D" });
    // ...and C, named by D's push as the commit it replaced, is older, whatever comes.
    assert.deepEqual(o.observe("p", "C", "B"), { stale: true, newer: "D" });
  });
});
