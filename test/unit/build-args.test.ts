// How buildah 1.28 writes the ARG values a RUN saw into its history line (build-args.ts).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { runHistory } from "../../src/fastpath/build-args.js";

describe("build args in a RUN's history", () => {
  test("none: the step as written", () => {
    assert.equal(runHistory("/bin/sh -c make", [], ["A=1"]), "/bin/sh -c make");
  });
  test("sorted name=value pairs after |count; an ENV of the same name gives its value", () => {
    assert.equal(runHistory("/bin/sh -c make", [["NODE_ENV", "development"], ["B", "2"]], ["PATH=/bin", "NODE_ENV=production"]), "|2 B=2 NODE_ENV=production /bin/sh -c make");
  });
  test("the count is of space-separated words, as buildah counts (a value with a space counts twice)", () => {
    assert.equal(runHistory("/bin/sh -c x", [["A", "a b"]], []), "|2 A=a b /bin/sh -c x");
  });
  test("sorted as strings whole (Go's sort.Strings on name=value), not by name", () => {
    // "A=" (0x3d) sorts after "A1" (0x31): by name A would come first.
    assert.equal(runHistory("/bin/sh -c x", [["A", "z"], ["A1", "y"]], []), "|2 A1=y A=z /bin/sh -c x");
  });
});
