// kilnd's lazy imports of npm packages. kilnd ships as an esbuild bundle (scripts/bundle-kilnd.mjs)
// that leaves modules it loads late in chunks of their own. A CommonJS package imported with
// import() there has no named exports: session 17's `await import("dockerfile-ast")` gave an
// undefined DockerfileParser, and every full build under the shipped kilnd failed, while the
// tests that run src/ under tsx passed. A package kiln loads late must be an ES module; a
// CommonJS one goes through a module of kiln's own that imports it statically (label-place.ts).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

const ROOT = new URL("../..", import.meta.url).pathname;

/** Every file under dir ending in .ts. */
const sources = (dir: string) => readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts")).map((f) => join(dir, f));

/** The packages a source loads at run time with import() (`await import("x")`, `import("x").then`), not types (`import("x").Name`). */
function lazyPackages(text: string): string[] {
  return [...text.matchAll(/(?:await\s+import\(\s*"([^"]+)"\s*\))|(?:import\(\s*"([^"]+)"\s*\)\s*\.then\b)/g)]
    .map((m) => m[1] ?? m[2]!)
    .filter((s) => !s.startsWith(".") && !s.startsWith("node:"));
}

/** An ES module package: "type": "module", or an "import" condition for its main entry. */
function isEsModule(name: string): boolean {
  const root = name.startsWith("@") ? name.split("/").slice(0, 2).join("/") : name.split("/")[0]!;
  const pkg = JSON.parse(readFileSync(join(ROOT, "node_modules", root, "package.json"), "utf8")) as { type?: string; exports?: unknown };
  if (pkg.type === "module") return true;
  const main = typeof pkg.exports === "object" && pkg.exports !== null ? ((pkg.exports as Record<string, unknown>)["."] ?? pkg.exports) : undefined;
  return typeof main === "object" && main !== null && "import" in main;
}

test("the packages kilnd imports lazily are ES modules (a CommonJS one has no named exports in the bundle's chunks)", () => {
  // The check itself tells the two kinds apart.
  assert.equal(isEsModule("execa"), true);
  assert.equal(isEsModule("dockerfile-ast"), false);
  assert.deepEqual(lazyPackages(`const { A } = await import("dockerfile-ast"); type F = import("dockerfile-ast").Flag; import("chokidar").then(f); await import("./x.js");`), ["dockerfile-ast", "chokidar"]);

  const found = sources(join(ROOT, "src")).flatMap((file) => lazyPackages(readFileSync(file, "utf8")).map((pkg) => ({ file: file.slice(ROOT.length), pkg })));
  assert.ok(found.length > 0, "kilnd loads some packages lazily (execa, chokidar)");
  const commonJs = found.filter((f) => !isEsModule(f.pkg));
  assert.deepEqual(commonJs, [], `CommonJS packages imported with import(): ${commonJs.map((f) => `${f.pkg} in ${f.file}`).join(", ")}`);
});
