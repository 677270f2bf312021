// The fast path's log line for a change: the count, the base commit, who listed the files, the first five.
import assert from "node:assert/strict";
import { test } from "node:test";
import { changeLine } from "../../src/fastpath/changes.js";

const base = "3eeed9a76e1f0123456789abcdef0123456789ab";

test("the change's line names the base commit, who listed the files and at most five of them", () => {
  assert.equal(changeLine(base, { paths: [], listedBy: "checkout" }), "fast path: no file changed since 3eeed9a76e1f (the checkout's list)");
  assert.equal(changeLine(base, { paths: ["src/a.txt"], listedBy: "git" }), "fast path: 1 file changed since 3eeed9a76e1f (git diff-tree): src/a.txt");
  const seven = ["a", "b", "c", "d", "e", "f", "g"];
  assert.equal(changeLine(base, { paths: seven, listedBy: "checkout" }), "fast path: 7 files changed since 3eeed9a76e1f (the checkout's list): a, b, c, d, e, and 2 more");
});
