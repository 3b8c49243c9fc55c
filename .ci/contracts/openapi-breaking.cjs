// Breaking changes between two OpenAPI 3.1 documents, for .ci/contracts.sh.
//
//   node openapi-breaking.cjs BASE.json HEAD.json
//
// Exit 0: HEAD keeps every promise BASE made. Exit 1: it breaks one, or it
// adds a path without a major version. Exit 2: a document cannot be read.
//
// The comparison is api-smart-diff's (OpenAPI 3.0 and 3.1, request and
// response directions told apart, $refs resolved). Two things are added here:
//
// - A `type` replaced inside a response is breaking unless the new types
//   are a subset of the old (a field that may now be null, or is now a
//   number, breaks a client); api-smart-diff 1.0.6 calls every such change
//   non-breaking. Inside a request it is breaking unless the new types are a
//   superset of the old.
// - The major version rule: every path is `/<audience>/v<N>/...`, so a
//   breaking change always has a new major version (`/partner/v2/...`) to go
//   to, beside the old one.
//
// Changes are reported where a client meets them, per operation; changes
// under components/schemas are only the same changes seen from the other
// side of a $ref, and are left out (security schemes are kept).

"use strict";

const fs = require("node:fs");

// A crash is "could not run" (2), never "breaking" (1).
process.on("uncaughtException", (e) => fail2(e.stack || String(e)));

let apiCompare;
try {
  ({ apiCompare } = require("api-smart-diff"));
} catch (e) {
  fail2(`api-smart-diff is not installed where NODE_PATH points (.ci/contracts.sh sets it): ${e.message}`);
}

const METHODS = new Set(["get", "put", "post", "delete", "options", "head", "patch", "trace"]);
const VERSIONED = /^\/[^/]+\/v(\d+)(\/|$)/;

function load(file) {
  let doc;
  try {
    doc = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    fail2(`${file}: not readable as JSON: ${e.message}`);
  }
  if (!doc || typeof doc.openapi !== "string" || !/^3\.[01]\./.test(doc.openapi)) {
    fail2(`${file}: not an OpenAPI 3.0 or 3.1 document (openapi: ${JSON.stringify(doc && doc.openapi)})`);
  }
  return doc;
}

function fail2(message) {
  console.error(`openapi-breaking: ${message}`);
  process.exit(2);
}

function operations(doc) {
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of Object.keys(item || {})) {
      if (METHODS.has(method)) ops.push(`${method.toUpperCase()} ${path}`);
    }
  }
  return ops;
}

function short(value) {
  if (value === undefined) return "";
  const text = JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function typeSet(value) {
  return new Set(Array.isArray(value) ? value : [value]);
}

// Whether every value of the types `inner` is one of `outer` (an integer is
// a number).
function covers(outer, inner) {
  for (const t of inner) {
    if (!outer.has(t) && !(t === "integer" && outer.has("number"))) return false;
  }
  return true;
}

// The section of an operation a diff path is in: "request", "response",
// "parameter", or another key of the operation.
function section(path) {
  if (path[0] !== "paths") return null;
  if (path[2] === "parameters") return "parameter";
  if (!METHODS.has(path[2])) return null;
  if (path[3] === "responses") return "response";
  if (path[3] === "requestBody") return "request";
  if (path[3] === "parameters") return "parameter";
  return path[3] || "operation";
}

function classify(diff) {
  const last = diff.path[diff.path.length - 1];
  const where = section(diff.path);
  if (diff.action === "replace" && last === "type" && diff.path.includes("schema")) {
    const before = typeSet(diff.before);
    const after = typeSet(diff.after);
    if (where === "response") return covers(before, after) ? "non-breaking" : "breaking";
    if (where === "request" || where === "parameter") return covers(after, before) ? "non-breaking" : "breaking";
  }
  return diff.type;
}

// `.lines[].quantity`, from a diff path inside a schema.
function schemaPointer(segments) {
  let out = "";
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i];
    if (s === "properties" && i + 1 < segments.length) {
      out += `.${segments[++i]}`;
    } else if (s === "items") {
      out += "[]";
    } else if ((s === "allOf" || s === "oneOf" || s === "anyOf") && i + 1 < segments.length) {
      out += `(${s} ${segments[++i]})`;
    } else if ((s === "required" || s === "enum") && i === segments.length - 2) {
      // An entry of the list: the action line names the value.
      out += ` ${s}`;
      i++;
    } else {
      out += ` ${s}`;
    }
  }
  return out.trim() || "(schema)";
}

function parameterName(doc, path) {
  const item = doc.paths && doc.paths[path[1]];
  const list = path[2] === "parameters" ? item && item.parameters : item && item[path[2]] && item[path[2]].parameters;
  const index = path[2] === "parameters" ? path[3] : path[4];
  const param = list && list[index];
  return param ? `${param.in} parameter ${param.name}` : `parameter ${index}`;
}

// Where a client meets the change, and what changed.
function describe(diff, base, head) {
  const p = diff.path;
  if (p[0] === "components" && p[1] === "securitySchemes") {
    const what = p.slice(3).join(" ") || "scheme";
    return { op: `security scheme ${p[2]}`, what: `${what}: ${diff.action === "replace" ? `${short(diff.before)} -> ${short(diff.after)}` : `${diff.action === "add" ? "added" : "removed"}`}` };
  }
  if (p[0] !== "paths") return { op: p.join(" "), what: `${diff.action}: ${short(diff.before)} -> ${short(diff.after)}` };
  if (p.length === 2) return { op: p[1], what: `path ${diff.action === "remove" ? "removed" : diff.action}` };
  const op = METHODS.has(p[2]) ? `${p[2].toUpperCase()} ${p[1]}` : `${p[1]} (every operation)`;
  if (METHODS.has(p[2]) && p.length === 3) {
    return { op, what: diff.action === "remove" ? "operation removed" : `operation ${diff.action}` };
  }
  const rest = METHODS.has(p[2]) ? p.slice(3) : p.slice(2);
  let where;
  if (rest[0] === "requestBody") {
    const schemaAt = rest.indexOf("schema");
    where = schemaAt >= 0 ? `request body ${schemaPointer(rest.slice(schemaAt + 1))}` : `request body ${rest.slice(1).join(" ")}`;
  } else if (rest[0] === "responses") {
    const schemaAt = rest.indexOf("schema");
    if (schemaAt >= 0) where = `response ${rest[1]} ${schemaPointer(rest.slice(schemaAt + 1))}`;
    else if (rest[2] === "headers") where = `response ${rest[1]} header ${rest[3]} ${rest.slice(4).join(" ")}`;
    else where = `response ${rest.slice(1).join(" ")}`;
  } else if (rest[0] === "parameters") {
    const name = parameterName(diff.action === "add" ? head : base, p);
    const schemaAt = rest.indexOf("schema");
    where = schemaAt >= 0 ? `${name} ${schemaPointer(rest.slice(schemaAt + 1))}` : `${name} ${rest.slice(2).join(" ")}`;
  } else {
    where = rest.join(" ");
  }
  where = where.trim();
  let what;
  const requiredParam = rest[0] === "parameters" && rest.length === 2 && diff.after && diff.after.required === true;
  if (diff.action === "add" && requiredParam) what = `${where}: added, required`;
  else if (diff.action === "add") what = `${where}: added${diff.after !== undefined && typeof diff.after !== "object" ? ` ${short(diff.after)}` : ""}`;
  else if (diff.action === "remove") what = `${where}: removed${diff.before !== undefined && typeof diff.before !== "object" ? ` ${short(diff.before)}` : ""}`;
  else what = `${where}: ${short(diff.before)} -> ${short(diff.after)}`;
  return { op, what };
}

function versionOf(op) {
  const path = op.split(" ").pop();
  const m = VERSIONED.exec(path);
  return m ? `${path.split("/")[1]} v${m[1]}` : null;
}

function main() {
  const [baseFile, headFile] = process.argv.slice(2);
  if (!baseFile || !headFile) fail2("usage: node openapi-breaking.cjs BASE.json HEAD.json");
  const base = load(baseFile);
  const head = load(headFile);

  let diffs;
  try {
    ({ diffs } = apiCompare(base, head));
  } catch (e) {
    fail2(`api-smart-diff could not compare the documents: ${e.stack || e}`);
  }

  const breaking = new Map(); // op -> Set of what
  const unclassified = new Map();
  let nonBreaking = 0;
  for (const diff of diffs) {
    const inComponents = diff.path[0] === "components";
    if (inComponents && diff.path[1] !== "securitySchemes") continue;
    const type = classify(diff);
    if (type === "breaking" || type === "unclassified") {
      const { op, what } = describe(diff, base, head);
      const into = type === "breaking" ? breaking : unclassified;
      if (!into.has(op)) into.set(op, new Set());
      into.get(op).add(what);
    } else if (type === "non-breaking" || type === "deprecated") {
      // Added operations are listed on their own below.
      const wholeOperation = diff.path[0] === "paths" && (diff.path.length === 2 || diff.path.length === 3);
      if (!(wholeOperation && diff.action === "add")) nonBreaking++;
    }
  }

  const baseOps = new Set(operations(base));
  const headOps = operations(head);
  const added = headOps.filter((op) => !baseOps.has(op));
  const unversioned = headOps.filter((op) => !VERSIONED.test(op.split(" ").pop()));

  if (added.length) {
    console.log(`   added operations (${added.length}):`);
    for (const op of added) console.log(`     + ${op}`);
  }
  console.log(`   other non-breaking changes: ${nonBreaking}`);
  for (const [op, whats] of unclassified) {
    console.log(`   ? ${op}: not classified by the tool, look at it yourself:`);
    for (const what of whats) console.log(`       ${what}`);
  }

  let failed = false;
  if (unversioned.length) {
    failed = true;
    console.log(`   UNVERSIONED PATHS (${unversioned.length}): every path is /<audience>/v<N>/..., so that a later`);
    console.log("  breaking change has a new major version to go to:");
    for (const op of unversioned) console.log(`     ! ${op}`);
  }
  if (breaking.size) {
    failed = true;
    const count = [...breaking.values()].reduce((n, s) => n + s.size, 0);
    const majors = new Set(
      [...breaking.keys()].map((op) => (METHODS.has(op.split(" ")[0].toLowerCase()) ? versionOf(op) || "unversioned" : "every version")),
    );
    const places = `${breaking.size} ${breaking.size === 1 ? "place" : "places"}`;
    console.log(`   BREAKING CHANGES (${count}, in ${places}; contracts: ${[...majors].sort().join(", ")}):`);
    for (const [op, whats] of [...breaking].sort((a, b) => a[0].localeCompare(b[0]))) {
      console.log(`     ${op}`);
      for (const what of [...whats].sort()) console.log(`       - ${what}`);
    }
    const goneMajors = [...new Set([...baseOps].map(versionOf).filter(Boolean))].filter(
      (major) => !headOps.some((op) => versionOf(op) === major),
    );
    for (const major of goneMajors) {
      console.log(`   every operation of ${major} is gone: a new major version stands beside the old one, which stays`);
      console.log("  (mark its operations deprecated: true) for as long as partners use it.");
    }
  }
  process.exit(failed ? 1 : 0);
}

main();
