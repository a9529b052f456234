#!/usr/bin/env node
// Validates captured HTTP answers of todod against daemon/openapi.json with
// Stoplight Prism's own validator (@stoplight/prism-http, the library behind
// `prism proxy --errors`), for the answers the proxy cannot carry: framing-layer
// rejections, answers that belong to no operation (404, 405, 501), request bodies
// Prism would refuse or re-serialize, and the lines of a streamed answer.
//
// usage: node openapi_conformance.js PRISM_DIR DOCUMENT validate EXCHANGES.json
//        node openapi_conformance.js PRISM_DIR DOCUMENT selfcheck
//
// PRISM_DIR: the npm prefix @stoplight/prism-cli was installed into.
//
// validate: EXCHANGES.json is a list of
//   {"name", "method", "path", "status", "headers": {name: value}, "body_b64",
//    "as": "route" | "unrouted" | "progress-line" | "report-line"}
// "route" (the default) finds the operation with Prism's router, as the proxy
// does; "unrouted" uses the document's x-unrouted-responses; the *-line kinds
// validate one line of an application/x-ndjson answer against
// components.schemas.PerformanceTestProgress / PerformanceTestReport (with "type").
// Besides Prism's findings, a status must be declared by the operation or be one of
// the x-status-codes of its `default` response (Prism only warns otherwise).
// Prints one JSON object per exchange: {"name", "operation", "violations": [...]}.
//
// selfcheck: for every response of every operation, a body of the wrong type, a
// value its schema rejects, a missing required header and a wrong media type must
// each be reported, so that no schema Prism cannot compile passes silently.
//
// Exit status: 0 when nothing was found, 1 otherwise, 2 on a usage or setup error.
"use strict";

const fs = require("fs");
const path = require("path");

const [prismDir, docPath, mode, exchangesPath] = process.argv.slice(2);
if (!prismDir || !docPath || !["validate", "selfcheck"].includes(mode) || (mode === "validate" && !exchangesPath)) {
  console.error("usage: node openapi_conformance.js PRISM_DIR DOCUMENT validate EXCHANGES.json | selfcheck");
  process.exit(2);
}

// The library the proxy itself uses, resolved from the pinned prism-cli.
const cliDir = path.dirname(require.resolve("@stoplight/prism-cli/package.json", { paths: [path.resolve(prismDir)] }));
const httpDir = path.dirname(require.resolve("@stoplight/prism-http/package.json", { paths: [cliDir] }));
const http = require(httpDir);
const route = require(path.join(httpDir, "dist", "router")).default;
const { validateOutput } = require(path.join(httpDir, "dist", "validator"));
const typeIs = require(require.resolve("type-is", { paths: [httpDir] }));

const SYNTHETIC = {
  unrouted: "/__unrouted",
  "progress-line": "/__ndjson/progress",
  "report-line": "/__ndjson/report",
};

function resolveRef(doc, node) {
  while (node && node.$ref) {
    node = node.$ref.replace(/^#\//, "").split("/").reduce((o, k) => o[k], doc);
  }
  return node;
}

// The document plus one GET operation per synthetic kind, so that Prism's own
// validateOutput checks them like any other answer.
function withSynthetic(raw) {
  const doc = JSON.parse(JSON.stringify(raw));
  const unrouted = doc["x-unrouted-responses"];
  if (!unrouted || !unrouted.responses) throw new Error("the document has no x-unrouted-responses.responses");
  const line = (schema) => ({
    get: {
      operationId: `__synthetic${Object.keys(doc.paths).length}`,
      responses: { 200: { description: "one line", content: { "application/json": { schema } } } },
    },
  });
  doc.paths[SYNTHETIC.unrouted] = { get: { operationId: "__unrouted", responses: unrouted.responses } };
  doc.paths[SYNTHETIC["progress-line"]] = line({ $ref: "#/components/schemas/PerformanceTestProgress" });
  doc.paths[SYNTHETIC["report-line"]] = line({
    allOf: [{ $ref: "#/components/schemas/PerformanceTestReport" }, { required: ["type"] }],
  });
  return doc;
}

function diagnostics(either) {
  return either._tag === "Left"
    ? either.left.map((d) => ({
        severity: ["Error", "Warning", "Information", "Hint"][d.severity] || String(d.severity),
        path: d.path || [],
        message: d.message,
      }))
    : [];
}

function parseBody(status, headers, text) {
  const ctype = headers["content-type"] || "";
  // As Prism's proxy does (utils/parseResponse): JSON media types are parsed.
  if (status !== 204 && typeIs.is(ctype, ["application/json", "application/*+json"])) {
    try {
      return { body: JSON.parse(text) };
    } catch (e) {
      return { error: `body is not JSON although Content-Type is ${ctype}: ${e.message}` };
    }
  }
  return { body: text };
}

function declaredStatuses(raw, opPath, method) {
  const op = raw.paths[opPath] && raw.paths[opPath][method];
  if (!op) return null;
  const out = new Set(Object.keys(op.responses).filter((k) => k !== "default"));
  const dflt = resolveRef(raw, op.responses.default);
  for (const c of (dflt && dflt["x-status-codes"]) || []) out.add(String(c));
  return out;
}

async function validate(raw, operations, exchanges) {
  let failed = false;
  for (const ex of exchanges) {
    const kind = ex.as || "route";
    const violations = [];
    let resource;
    if (kind === "route") {
      const url = new URL(ex.path, "http://todod.invalid");
      const query = {};
      for (const k of url.searchParams.keys()) query[k] = url.searchParams.getAll(k);
      const found = route({
        resources: operations.filter((o) => !o.path.startsWith("/__")),
        input: { method: ex.method.toLowerCase(), url: { path: url.pathname, query }, headers: {} },
      });
      if (found._tag === "Left") violations.push({ severity: "Error", path: [], message: `no operation: ${found.left.message}` });
      else resource = found.right;
    } else if (SYNTHETIC[kind]) {
      resource = operations.find((o) => o.path === SYNTHETIC[kind]);
    } else {
      violations.push({ severity: "Error", path: [], message: `unknown kind ${kind}` });
    }
    const headers = {};
    for (const [k, v] of Object.entries(ex.headers || {})) headers[k.toLowerCase()] = v;
    const text = Buffer.from(ex.body_b64 || "", "base64").toString("utf8");
    const parsed = parseBody(ex.status, headers, text);
    if (parsed.error) violations.push({ severity: "Error", path: ["body"], message: parsed.error });
    let operation = null;
    if (resource) {
      operation = kind === "route" ? `${resource.method.toUpperCase()} ${resource.path}` : kind;
      if (!parsed.error) {
        violations.push(...diagnostics(validateOutput({
          resource,
          element: { statusCode: ex.status, headers, body: parsed.body },
        })));
      }
      const declared = declaredStatuses(raw, kind === "route" ? resource.path : SYNTHETIC[kind], resource.method);
      if (kind !== "unrouted" && declared && !declared.has(String(ex.status))) {
        violations.push({
          severity: "Error",
          path: ["status"],
          message: `status ${ex.status} is neither declared by ${operation} nor one of the framing statuses of its default response`,
        });
      }
    }
    if (violations.length) failed = true;
    console.log(JSON.stringify({ name: ex.name, operation, violations }));
  }
  return failed ? 1 : 0;
}

// A value the schema must reject, or undefined when there is no obvious one.
function wrongValue(schema) {
  const types = [].concat(schema.type || []);
  if (types.includes("object") || schema.properties || schema.allOf) return 12345;
  if (types.includes("array")) return { not: "an array" };
  if (types.includes("string")) return schema.enum || schema.pattern ? "\u0000 not this" : undefined;
  if (types.includes("integer") || types.includes("number")) return "not a number";
  return undefined;
}

async function selfcheck(raw, operations) {
  const problems = [];
  let checks = 0;
  for (const resource of operations) {
    if (resource.path.startsWith("/__")) continue;
    const where = `${resource.method.toUpperCase()} ${resource.path}`;
    for (const resp of resource.responses) {
      const status = resp.code === "default" ? 400 : Number(resp.code.replace(/X/g, "0"));
      const contents = resp.contents || [];
      const requiredHeaders = (resp.headers || []).filter((h) => h.required);
      // A header set that satisfies the response, so that each mutation below is
      // the only thing wrong.
      const good = {};
      for (const h of resp.headers || []) {
        // http-spec moves a schema's "example" into "examples".
        const ex = h.schema && (h.schema.example !== undefined ? h.schema.example : (h.schema.examples || [])[0]);
        if (ex !== undefined) good[h.name.toLowerCase()] = String(ex);
      }
      for (const c of contents) {
        const media = c.mediaType;
        const schema = c.schema || {};
        // The documented example passes (so the checks below are not trivially met).
        const example = (c.examples || []).find((e) => e && "value" in e);
        if (example) {
          checks++;
          const d = diagnostics(validateOutput({ resource, element: { statusCode: status, headers: { ...good, "content-type": media }, body: example.value } }));
          if (d.length) problems.push(`${where} ${resp.code} ${media}: its own example does not pass: ${JSON.stringify(d)}`);
        }
        const bad = wrongValue(schema);
        if (bad !== undefined) {
          checks++;
          const body = media.startsWith("application/json") ? bad : typeof bad === "string" ? bad : JSON.stringify(bad);
          const d = diagnostics(validateOutput({ resource, element: { statusCode: status, headers: { ...good, "content-type": media }, body } }));
          if (!d.some((x) => x.severity === "Error" && x.path[0] === "body")) {
            problems.push(`${where} ${resp.code} ${media}: a body of the wrong type (${JSON.stringify(bad)}) was not reported`);
          }
        }
        checks++;
        const wrongMedia = media.startsWith("text/html") ? "application/json" : "text/html";
        const d = diagnostics(validateOutput({ resource, element: { statusCode: status, headers: { ...good, "content-type": wrongMedia }, body: "x" } }));
        if (!d.some((x) => x.severity === "Error" && /media type/.test(x.message))) {
          problems.push(`${where} ${resp.code} ${media}: Content-Type ${wrongMedia} was not reported`);
        }
      }
      for (const h of requiredHeaders) {
        checks++;
        const headers = { ...good };
        delete headers[h.name.toLowerCase()];
        const body = contents.length ? undefined : "";
        const element = { statusCode: status, headers, body };
        if (contents.length) element.headers["content-type"] = contents[0].mediaType;
        const d = diagnostics(validateOutput({ resource, element })).filter((x) => x.path[0] === "header");
        if (!d.length) problems.push(`${where} ${resp.code}: a missing ${h.name} header was not reported`);
        checks++;
        const wrong = { ...good, [h.name.toLowerCase()]: "\u0001 not this" };
        if (contents.length) wrong["content-type"] = contents[0].mediaType;
        const d2 = diagnostics(validateOutput({ resource, element: { statusCode: status, headers: wrong, body } })).filter((x) => x.path[0] === "header");
        if (h.schema && h.schema.pattern && !d2.length) problems.push(`${where} ${resp.code}: a malformed ${h.name} header was not reported`);
      }
    }
  }
  for (const p of problems) console.log(p);
  console.log(`selfcheck: ${checks} checks, ${problems.length} problems`);
  return problems.length ? 1 : 0;
}

async function main() {
  const raw = JSON.parse(fs.readFileSync(docPath, "utf8"));
  const operations = await http.getHttpOperationsFromSpec(withSynthetic(raw));
  if (mode === "selfcheck") return selfcheck(raw, operations);
  return validate(raw, operations, JSON.parse(fs.readFileSync(exchangesPath, "utf8")));
}

main().then(
  (rc) => process.exit(rc),
  (e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(2);
  }
);
