// Both builds load and agree: the CommonJS one through require, the ESM one through import.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { test } from "node:test";

import * as esm from "@stripemeter/sdk-node";

const require = createRequire(import.meta.url);

test("the CommonJS build loads with require and exports what the ESM build exports", () => {
  const cjs = require("@stripemeter/sdk-node");
  assert.match(require.resolve("@stripemeter/sdk-node"), /dist[\\/]cjs[\\/]index\.js$/);
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  assert.equal(typeof cjs.createClient, "function");
  const key = cjs.contentKey({ metric: "api_calls", customerRef: "cus_123", quantity: 100, ts: "2026-01-16T14:30:00Z" });
  assert.equal(key.key, "content:ab0f825b8e94045d4974c684afd7985e373908f33df585e4356ebb86c3f2e128");
  // A CommonJS error is a StripeMeterError of the CommonJS build.
  assert.throws(() => cjs.canonicalQuantity("x"), cjs.InvalidEventError);
});

test("the ESM build is the one import loads, a module apart from the CommonJS one", () => {
  const error = (() => {
    try {
      esm.canonicalQuantity("x");
    } catch (thrown) {
      return thrown;
    }
  })();
  assert.ok(error instanceof esm.InvalidEventError);
  assert.match(error.stack, /dist[\\/]esm[\\/]content\.js/);
  assert.notEqual(esm.StripeMeterError, require("@stripemeter/sdk-node").StripeMeterError);
  assert.equal(esm.contentKey({ metric: "api_calls", customerRef: "cus_123", quantity: 100, ts: "2026-01-16T14:30:00Z" }).key,
    "content:ab0f825b8e94045d4974c684afd7985e373908f33df585e4356ebb86c3f2e128");
});

test("declarations ship for both builds, and the version matches package.json", () => {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  assert.equal(esm.VERSION, pkg.version);
  for (const condition of ["import", "require"]) {
    const types = pkg.exports["."][condition].types;
    assert.match(readFileSync(new URL(`../${types}`, import.meta.url), "utf8"), /createClient/);
  }
  assert.deepEqual(Object.keys(pkg.dependencies ?? {}), []);
});

test("a client needs a key: given, or STRIPEMETER_API_KEY", () => {
  const saved = process.env.STRIPEMETER_API_KEY;
  try {
    delete process.env.STRIPEMETER_API_KEY;
    assert.throws(() => esm.createClient(), /no API key/);
    process.env.STRIPEMETER_API_KEY = "sm_from_env";
    assert.equal(esm.createClient().apiUrl, "http://127.0.0.1:3000");
  } finally {
    if (saved === undefined) delete process.env.STRIPEMETER_API_KEY;
    else process.env.STRIPEMETER_API_KEY = saved;
  }
});

test("the npm tarball holds dist, README.md, LICENSE and package.json only", () => {
  const [pack] = JSON.parse(
    execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
      cwd: new URL("..", import.meta.url),
      encoding: "utf8",
    }),
  );
  const paths = pack.files.map((f) => f.path);
  const outside = paths.filter((p) => !p.startsWith("dist/") && !["README.md", "LICENSE", "package.json"].includes(p));
  assert.deepEqual(outside, []);
  for (const needed of ["README.md", "LICENSE", "package.json", "dist/esm/index.js", "dist/esm/index.d.ts", "dist/cjs/index.js", "dist/cjs/index.d.ts", "dist/cjs/package.json"]) {
    assert.ok(paths.includes(needed), needed);
  }
});
