#!/usr/bin/env node
// An OTLP/HTTP trace receiver for the integration tests (Node.js built-ins and
// @opentelemetry/otlp-transformer, whose protobuf definitions are the OTLP
// schema).
//
// usage: node otlp_receiver.js --out FILE [--port N] [--tools DIR]
//                              [--status CODE] [--delay-ms N] [--close] [--times N]
//   --port N     listen on 127.0.0.1:N (default 0: any free port). The chosen
//                port is the first line of standard output.
//   --out FILE   one JSON line per received span is appended to FILE.
//   --tools DIR  where `npm install --prefix` put the package (default
//                tests/.tools next to this file's directory).
//   --status, --delay-ms, --close, --times: the initial behaviour (below).
//
// POST /v1/traces   an ExportTraceServiceRequest in OTLP/JSON. EVERY payload is
//   validated: Content-Type application/json, strict JSON, trace and span ids
//   as lowercase hex (converted to base64 for protobufjs), then
//   ExportTraceServiceRequest.fromObject() and .verify(), then a round trip
//   (toObject with 64-bit integers as strings and enums as numbers) that must
//   give back every field that was sent: an unknown field, an enum by name, an
//   integer that is not a decimal string or a value protobufjs had to coerce is
//   an error. Plus what OTLP requires of a span: a name, a kind, both times,
//   end not before start. A valid payload gets 200 {} (or the behaviour's
//   answer); an invalid one 400. Each span of an accepted or invalid payload
//   becomes one line of FILE:
//     {"request": n, "traceId", "spanId", "parentSpanId", "traceState", "name",
//      "kind", "startTimeUnixNano", "endTimeUnixNano", "attributes": {k: v},
//      "droppedAttributesCount", "status": {"code", "message"},
//      "resource": {k: v}, "scope": {"name", "version"}, "error": null|"..."}
//   (attribute values flattened: intValue as a number, or a string beyond 2^53;
//   non-finite doubles as the strings "NaN", "Infinity", "-Infinity").
//   A payload with no span to show is one line {"request": n, "error": "..."}.
//   Spans refused by the behaviour (an error status, a hang-up) are not written:
//   the sender is expected to send them again.
// POST /control     JSON {"status", "delay_ms", "close", "times", "rejected"}:
//   answer with that status (200), after delay_ms, or close the connection
//   without an answer; for the next `times` requests only (null: until changed),
//   then back to normal. "rejected": N answers 200 with a partialSuccess of N
//   rejected spans. {"reset": true} restores normal behaviour and zeroes the
//   counters. Answers the behaviour in force.
// GET /stats        {"requests", "answered": {status: n}, "closed", "invalid",
//                    "spans", "package"}: the exports seen and how each was
//                    answered, spans written to FILE, the schema's package.
// SIGTERM or SIGINT stops it.
"use strict";

const fs = require("fs");
const http = require("http");
const path = require("path");
const zlib = require("zlib");

const PKG = "@opentelemetry/otlp-transformer";
const MAX_BODY = 32 * 1024 * 1024;

function parseArgs(argv) {
  const opts = { port: 0, out: null, tools: path.join(__dirname, "..", ".tools"), behaviour: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--port") opts.port = Number(next());
    else if (a === "--out") opts.out = next();
    else if (a === "--tools") opts.tools = next();
    else if (a === "--status") opts.behaviour.status = Number(next());
    else if (a === "--delay-ms") opts.behaviour.delay_ms = Number(next());
    else if (a === "--close") opts.behaviour.close = true;
    else if (a === "--times") opts.behaviour.times = Number(next());
    else throw new Error(`unknown argument ${a}`);
  }
  if (!opts.out) throw new Error("--out FILE is required");
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) throw new Error("bad --port");
  return opts;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (e) {
  console.error(`otlp_receiver: ${e.message}`);
  console.error("usage: node otlp_receiver.js --out FILE [--port N] [--tools DIR] " +
    "[--status CODE] [--delay-ms N] [--close] [--times N]");
  process.exit(2);
}

// The package's protobufjs static module: the OTLP protobuf definitions.
const rootPath = require.resolve(`${PKG}/build/src/generated/root`, { paths: [path.resolve(opts.tools)] });
const pkgVersion = require(path.join(path.dirname(rootPath), "..", "..", "..", "package.json")).version;
const root = require(rootPath);
const ExportTraceServiceRequest = root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;

// ---------------------------------------------------------------- validation

const HEX_TRACE = /^[0-9a-f]{32}$/;
const HEX_SPAN = /^[0-9a-f]{16}$/;
const DECIMAL = /^-?[0-9]+$/;

class Invalid extends Error {}

// OTLP/JSON carries ids as hex; protobufjs's fromObject reads bytes as base64.
// An optional id may be absent or empty (a root span's parentSpanId).
function convertId(obj, key, re, where, optional) {
  const value = obj[key];
  if (value === undefined || (optional && value === "")) return;
  if (typeof value !== "string" || !re.test(value)) {
    throw new Invalid(`${where}.${key} ${JSON.stringify(value)} is not ${re === HEX_TRACE ? 32 : 16} lowercase hex digits`);
  }
  if (/^0+$/.test(value)) throw new Invalid(`${where}.${key} is all zeroes (invalid)`);
  obj[key] = Buffer.from(value, "hex").toString("base64");
}

// A copy of the request with every id in base64; throws Invalid on a bad id.
function convertIds(req) {
  const copy = JSON.parse(JSON.stringify(req));
  for (const [r, rs] of (Array.isArray(copy.resourceSpans) ? copy.resourceSpans : []).entries()) {
    for (const [s, ss] of (rs && Array.isArray(rs.scopeSpans) ? rs.scopeSpans : []).entries()) {
      for (const [i, span] of (ss && Array.isArray(ss.spans) ? ss.spans : []).entries()) {
        if (!span || typeof span !== "object") continue;
        const where = `resourceSpans[${r}].scopeSpans[${s}].spans[${i}]`;
        convertId(span, "traceId", HEX_TRACE, where, false);
        convertId(span, "spanId", HEX_SPAN, where, false);
        convertId(span, "parentSpanId", HEX_SPAN, where, true);
        for (const [k, link] of (Array.isArray(span.links) ? span.links : []).entries()) {
          if (!link || typeof link !== "object") continue;
          convertId(link, "traceId", HEX_TRACE, `${where}.links[${k}]`, false);
          convertId(link, "spanId", HEX_SPAN, `${where}.links[${k}]`, false);
        }
      }
    }
  }
  return copy;
}

function isDefault(v) {
  return v === 0 || v === "" || v === false || v === "0" ||
    (Array.isArray(v) && v.length === 0);
}

// Everything sent must come back from the schema unchanged (proto3 leaves
// default values out, so those may be missing).
function roundTrip(sent, back, where) {
  if (Array.isArray(sent)) {
    if (!Array.isArray(back) || back.length !== sent.length) throw new Invalid(`${where}: not an array of that schema`);
    sent.forEach((v, i) => roundTrip(v, back[i], `${where}[${i}]`));
    return;
  }
  if (sent !== null && typeof sent === "object") {
    if (back === null || typeof back !== "object" || Array.isArray(back)) throw new Invalid(`${where}: not a message of that schema`);
    for (const [k, v] of Object.entries(sent)) {
      if (!(k in back)) {
        if (isDefault(v)) continue;
        throw new Invalid(`${where}.${k}: not a field of the OTLP schema`);
      }
      roundTrip(v, back[k], `${where}.${k}`);
    }
    return;
  }
  if (sent !== back) {
    const hint = typeof sent === "number" && typeof back === "string"
      ? " (64-bit integers must be decimal strings)"
      : typeof sent === "string" && typeof back === "number" ? " (enums must be integers)" : "";
    throw new Invalid(`${where}: ${JSON.stringify(sent)} reads as ${JSON.stringify(back)}${hint}`);
  }
}

// What OTLP requires of a span beyond its types.
function checkSpan(span, where) {
  if (typeof span.name !== "string" || span.name === "") throw new Invalid(`${where}.name is missing or empty`);
  if (!Number.isInteger(span.kind) || span.kind < 1 || span.kind > 5) throw new Invalid(`${where}.kind ${JSON.stringify(span.kind)} is not 1..5`);
  for (const f of ["startTimeUnixNano", "endTimeUnixNano"]) {
    if (typeof span[f] !== "string" || !DECIMAL.test(span[f]) || BigInt(span[f]) <= 0n) {
      throw new Invalid(`${where}.${f} ${JSON.stringify(span[f])} is not a positive decimal string`);
    }
  }
  if (BigInt(span.endTimeUnixNano) < BigInt(span.startTimeUnixNano)) throw new Invalid(`${where} ends before it starts`);
  if (span.traceId === undefined || span.spanId === undefined) throw new Invalid(`${where} lacks traceId or spanId`);
}

// Returns null when req (parsed JSON) is a valid ExportTraceServiceRequest, else why not.
function validate(req) {
  try {
    if (req === null || typeof req !== "object" || Array.isArray(req)) throw new Invalid("not a JSON object");
    const converted = convertIds(req);
    let message;
    try {
      message = ExportTraceServiceRequest.fromObject(converted);
    } catch (e) {
      throw new Invalid(`fromObject: ${e.message}`);
    }
    const err = ExportTraceServiceRequest.verify(message);
    if (err) throw new Invalid(`verify: ${err}`);
    const back = ExportTraceServiceRequest.toObject(message, {
      longs: String, enums: Number, bytes: String, json: true,
    });
    roundTrip(converted, back, "request");
    (req.resourceSpans || []).forEach((rs, r) => (rs.scopeSpans || []).forEach((ss, s) =>
      (ss.spans || []).forEach((span, i) => checkSpan(span, `resourceSpans[${r}].scopeSpans[${s}].spans[${i}]`))));
    return null;
  } catch (e) {
    if (e instanceof Invalid) return e.message;
    return `validation crashed: ${e && e.stack ? e.stack : e}`;
  }
}

// ---------------------------------------------------------------- flattening

function flatValue(v) {
  if (v === null || typeof v !== "object") return v;
  if ("stringValue" in v) return v.stringValue;
  if ("boolValue" in v) return v.boolValue;
  if ("doubleValue" in v) return v.doubleValue; // "NaN", "Infinity" stay strings
  if ("intValue" in v) {
    const n = Number(v.intValue);
    return Number.isSafeInteger(n) ? n : String(v.intValue);
  }
  if ("bytesValue" in v) return v.bytesValue;
  if ("arrayValue" in v) return ((v.arrayValue && v.arrayValue.values) || []).map(flatValue);
  if ("kvlistValue" in v) return flatAttrs(v.kvlistValue && v.kvlistValue.values);
  return null;
}

function flatAttrs(list) {
  const out = {};
  for (const kv of Array.isArray(list) ? list : []) {
    if (kv && typeof kv.key === "string") out[kv.key] = flatValue(kv.value);
  }
  return out;
}

function flatSpans(req, requestNo, error) {
  const lines = [];
  const resourceSpans = req && Array.isArray(req.resourceSpans) ? req.resourceSpans : [];
  for (const rs of resourceSpans) {
    const resource = flatAttrs(rs && rs.resource && rs.resource.attributes);
    for (const ss of rs && Array.isArray(rs.scopeSpans) ? rs.scopeSpans : []) {
      const scope = { name: ss && ss.scope ? ss.scope.name : undefined, version: ss && ss.scope ? ss.scope.version : undefined };
      for (const s of ss && Array.isArray(ss.spans) ? ss.spans : []) {
        if (!s || typeof s !== "object") continue;
        lines.push({
          request: requestNo,
          traceId: s.traceId,
          spanId: s.spanId,
          parentSpanId: s.parentSpanId || "",
          traceState: s.traceState || "",
          name: s.name,
          kind: s.kind,
          startTimeUnixNano: s.startTimeUnixNano,
          endTimeUnixNano: s.endTimeUnixNano,
          attributes: flatAttrs(s.attributes),
          droppedAttributesCount: s.droppedAttributesCount || 0,
          status: { code: (s.status && s.status.code) || 0, message: (s.status && s.status.message) || "" },
          resource,
          scope,
          error,
        });
      }
    }
  }
  if (lines.length === 0 && error) lines.push({ request: requestNo, error });
  return lines;
}

// ---------------------------------------------------------------- the server

const NORMAL = { status: 200, delay_ms: 0, close: false, times: null, rejected: 0 };
let behaviour = { ...NORMAL, ...opts.behaviour };
let stats = { requests: 0, answered: {}, closed: 0, invalid: 0, spans: 0 };

function record(lines) {
  if (lines.length === 0) return;
  fs.appendFileSync(opts.out, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
  stats.spans += lines.filter((l) => l.spanId !== undefined).length;
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

// The behaviour for this request, counting down `times`.
function takeBehaviour() {
  const b = behaviour;
  if (b.times !== null && b.times !== undefined) {
    behaviour = b.times > 1 ? { ...b, times: b.times - 1 } : { ...NORMAL };
  }
  return b;
}

function handleTraces(req, res, raw) {
  const requestNo = ++stats.requests;
  const b = takeBehaviour();
  const ctype = (req.headers["content-type"] || "").split(";")[0].trim().toLowerCase();
  let error = null;
  let parsed = null;
  let status = 200;

  if (ctype !== "application/json") {
    error = `Content-Type ${JSON.stringify(req.headers["content-type"] || "")} is not application/json`;
    status = 415;
  } else {
    try {
      const enc = (req.headers["content-encoding"] || "identity").toLowerCase();
      const text = (enc === "gzip" ? zlib.gunzipSync(raw) : raw).toString("utf8");
      parsed = JSON.parse(text);
      error = validate(parsed);
    } catch (e) {
      error = `not JSON: ${e.message}`;
    }
    if (error) status = 400;
  }
  if (error) stats.invalid++;

  const answer = () => {
    if (b.close) {
      stats.closed++;
      req.socket.destroy();
      return;
    }
    if (req.socket.destroyed) return; // the sender gave up waiting
    const code = error ? status : b.status;
    stats.answered[code] = (stats.answered[code] || 0) + 1;
    if (error || (code >= 200 && code < 300)) record(flatSpans(parsed, requestNo, error));
    if (error) reply(res, code, { error });
    else if (code >= 200 && code < 300 && b.rejected) {
      reply(res, code, { partialSuccess: { rejectedSpans: String(b.rejected), errorMessage: "rejected by the test" } });
    } else if (code >= 200 && code < 300) reply(res, code, {});
    else reply(res, code, { code: 14, message: `test receiver answers ${code}` });
  };
  if (b.delay_ms > 0) setTimeout(answer, b.delay_ms);
  else answer();
}

function handleControl(req, res, raw) {
  let body;
  try {
    body = raw.length ? JSON.parse(raw.toString("utf8")) : {};
  } catch (e) {
    reply(res, 400, { error: `not JSON: ${e.message}` });
    return;
  }
  if (body.reset) {
    behaviour = { ...NORMAL };
    stats = { requests: 0, answered: {}, closed: 0, invalid: 0, spans: 0 };
  } else {
    const next = { ...NORMAL };
    for (const k of Object.keys(NORMAL)) if (k in body) next[k] = body[k];
    behaviour = next;
  }
  reply(res, 200, behaviour);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on("data", (c) => {
    size += c.length;
    if (size <= MAX_BODY) chunks.push(c);
  });
  req.on("end", () => {
    const raw = Buffer.concat(chunks);
    const url = req.url.split("?")[0];
    if (size > MAX_BODY) reply(res, 413, { error: "body too large" });
    else if (req.method === "POST" && url === "/v1/traces") handleTraces(req, res, raw);
    else if (req.method === "POST" && url === "/control") handleControl(req, res, raw);
    else if (req.method === "GET" && url === "/control") reply(res, 200, behaviour);
    else if (req.method === "GET" && url === "/stats") reply(res, 200, { ...stats, package: `${PKG}@${pkgVersion}` });
    else reply(res, 404, { error: `no route ${req.method} ${url}` });
  });
});

server.keepAliveTimeout = 30000;
server.on("clientError", (err, socket) => socket.destroy());
server.listen(opts.port, "127.0.0.1", () => {
  process.stdout.write(`${server.address().port}\n`);
});
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
