#!/usr/bin/env node
// Validate an OpenAPI 3.0 document with @apidevtools/swagger-parser, plus the
// checks that library leaves out for OpenAPI 3 (it only validates against the
// OpenAPI 3.0 JSON Schema and resolves every $ref):
//   - operationIds are unique;
//   - each {name} of a path template is declared as a required path parameter,
//     and each declared path parameter appears in the template;
//   - each name listed in a schema's "required" is one of its properties;
//   - every "example" and "default" conforms to the schema it belongs to.
//
// usage: node validate_openapi.js DOCUMENT [TOOLS_DIR]
//   TOOLS_DIR: where `npm install --prefix` put swagger-parser
//              (default: tests/.tools next to this file's directory)
// Exit status 0 when valid; otherwise the problems are printed and it is 1.
"use strict";

const fs = require("fs");
const path = require("path");

const docPath = process.argv[2];
const toolsDir = path.resolve(process.argv[3] || path.join(__dirname, "..", ".tools"));
if (!docPath) {
  console.error("usage: node validate_openapi.js DOCUMENT [TOOLS_DIR]");
  process.exit(2);
}

function load(name, from) {
  return require(require.resolve(name, { paths: [from] }));
}

const SwaggerParser = load("@apidevtools/swagger-parser", toolsDir);
// ajv-draft-04 is a dependency of swagger-parser: resolve it from there.
const parserDir = path.dirname(require.resolve("@apidevtools/swagger-parser/package.json", { paths: [toolsDir] }));
const AjvDraft04 = load("ajv-draft-04", parserDir);

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

async function main() {
  const text = fs.readFileSync(docPath, "utf8");
  let raw;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    console.error(`${docPath}: not valid JSON: ${e.message}`);
    return 1;
  }
  if (typeof raw.openapi !== "string" || !raw.openapi.startsWith("3.0.")) {
    console.error(`${docPath}: "openapi" must be a 3.0.x version string, got ${JSON.stringify(raw.openapi)}`);
    return 1;
  }

  // 1. The library: OpenAPI 3.0 JSON Schema validation and $ref resolution.
  try {
    await SwaggerParser.validate(JSON.parse(text));
  } catch (e) {
    console.error(`${docPath}: swagger-parser: ${e.message}`);
    return 1;
  }
  const api = await SwaggerParser.dereference(JSON.parse(text));
  const problems = [];

  // 2. operationIds and path parameters.
  const opIds = new Map();
  let operations = 0;
  for (const [p, item] of Object.entries(api.paths)) {
    const templ = [...p.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    for (const m of METHODS) {
      const op = item[m];
      if (!op) continue;
      operations++;
      const where = `${m.toUpperCase()} ${p}`;
      if (op.operationId) {
        if (opIds.has(op.operationId)) {
          problems.push(`${where}: operationId ${op.operationId} also used by ${opIds.get(op.operationId)}`);
        }
        opIds.set(op.operationId, where);
      }
      const params = new Map();
      for (const prm of [...(item.parameters || []), ...(op.parameters || [])]) {
        params.set(`${prm.in}:${prm.name}`, prm); // operation level overrides path level
      }
      for (const name of templ) {
        const prm = params.get(`path:${name}`);
        if (!prm) problems.push(`${where}: path parameter {${name}} is not declared`);
        else if (prm.required !== true) problems.push(`${where}: path parameter {${name}} must be required`);
      }
      for (const prm of params.values()) {
        if (prm.in === "path" && !templ.includes(prm.name)) {
          problems.push(`${where}: path parameter ${prm.name} is not in the path template`);
        }
      }
    }
  }

  // 3. Schemas: required names exist; examples and defaults conform.
  const ajv = new AjvDraft04({ strict: false, allErrors: true });
  ajv.addFormat("uuid", /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
  ajv.addFormat("date-time", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i);
  ajv.addFormat("int64", { type: "number", validate: (n) => Number.isInteger(n) });
  ajv.addFormat("int32", { type: "number", validate: (n) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
  // OpenAPI-only keywords that are annotations for validation purposes.
  // (Ajv knows "nullable" itself.)
  for (const kw of ["example", "discriminator", "xml", "externalDocs", "deprecated", "readOnly", "writeOnly"]) {
    if (!ajv.getKeyword(kw)) ajv.addKeyword(kw);
  }
  const compiled = new Map();
  function conforms(schema, value, where, what) {
    let validate = compiled.get(schema);
    if (!validate) {
      try {
        validate = ajv.compile(schema);
      } catch (e) {
        problems.push(`${where}: schema does not compile: ${e.message}`);
        return;
      }
      compiled.set(schema, validate);
    }
    if (!validate(value)) {
      problems.push(`${where}: ${what} ${JSON.stringify(value)} does not conform: ${ajv.errorsText(validate.errors)}`);
    }
  }

  const seen = new Set();
  function walkSchema(s, where) {
    if (!s || typeof s !== "object" || seen.has(s)) return;
    seen.add(s);
    if (Array.isArray(s.required)) {
      for (const r of s.required) {
        if (!s.properties || !(r in s.properties)) problems.push(`${where}: required "${r}" is not a property`);
      }
    }
    if ("example" in s) conforms(s, s.example, where, "example");
    if ("default" in s) conforms(s, s.default, where, "default");
    for (const [k, v] of Object.entries(s.properties || {})) walkSchema(v, `${where}.${k}`);
    if (s.items) walkSchema(s.items, `${where}[]`);
    if (s.additionalProperties && typeof s.additionalProperties === "object") {
      walkSchema(s.additionalProperties, `${where}{}`);
    }
    for (const k of ["allOf", "anyOf", "oneOf"]) (s[k] || []).forEach((x, i) => walkSchema(x, `${where}.${k}[${i}]`));
    if (s.not) walkSchema(s.not, `${where}.not`);
  }
  // Anything with a "schema" (parameters, headers, media types) and its example(s).
  function walkDoc(node, where) {
    if (!node || typeof node !== "object") return;
    if (Array.isArray(node)) {
      node.forEach((x, i) => walkDoc(x, `${where}[${i}]`));
      return;
    }
    if (node.schema && typeof node.schema === "object") {
      walkSchema(node.schema, `${where}.schema`);
      if ("example" in node) conforms(node.schema, node.example, where, "example");
      for (const [k, ex] of Object.entries(node.examples || {})) {
        if (ex && "value" in ex) conforms(node.schema, ex.value, `${where}.examples.${k}`, "example");
      }
    }
    for (const [k, v] of Object.entries(node)) {
      if (k !== "schema" && k !== "example" && k !== "examples") walkDoc(v, `${where}.${k}`);
    }
  }
  for (const [name, s] of Object.entries((api.components && api.components.schemas) || {})) {
    walkSchema(s, `components.schemas.${name}`);
  }
  walkDoc(api.paths, "paths");
  walkDoc(api.components || {}, "components");

  if (problems.length) {
    for (const p of problems) console.error(`${docPath}: ${p}`);
    return 1;
  }
  const version = require(path.join(parserDir, "package.json")).version;
  console.log(
    `${docPath}: valid OpenAPI ${api.openapi} (${Object.keys(api.paths).length} paths, ` +
      `${operations} operations; @apidevtools/swagger-parser ${version})`
  );
  return 0;
}

main().then(
  (rc) => process.exit(rc),
  (e) => {
    console.error(`${docPath}: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  }
);
