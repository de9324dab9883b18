// A stand-in for Prisma's native query-engine binary, which Prisma only serves from its own
// download host (not reachable here). prisma-client-py spawns it as `query-engine -p PORT ...`
// and speaks the engine's HTTP API (GraphQL protocol). This serves that API with Prisma's
// WebAssembly build of the engine (@prisma/query-engine-wasm, from npm) over Prisma's pg driver
// adapter: each GraphQL request, in the subset prisma-client-py's query builder writes, becomes
// a JSON-protocol request (the only protocol the Wasm engine takes), and each answer is turned
// back into the GraphQL protocol's shape.
//   node qe.mjs -p PORT               serve (PRISMA_DML_PATH, OVERWRITE_DATASOURCES or the url env)
//   node qe.mjs --input-types FILE    precompute the schema's input types into the cache, exit
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import pathlib from 'node:path';
import pg from 'pg';
import { PrismaPg } from '@prisma/adapter-pg';
import { bindAdapter } from '@prisma/driver-adapter-utils';
import * as qe from '@prisma/query-engine-wasm/postgresql/query_engine_bg.js';

const require = createRequire(import.meta.url);

// The pg adapter refuses result columns of types it has no mapping for (catalog types such as
// name[] from pg_views, which LiteLLM's raw queries read); the native engine reads them as
// text. Relabel such columns as text (or text[]) before the adapter sees them.
const B = pg.types.builtins;
const MAPPED = new Set([
  B.INT2, B.INT4, B.INT8, B.FLOAT4, B.FLOAT8, B.BOOL, B.DATE, B.TIME, B.TIMETZ, B.TIMESTAMP,
  B.TIMESTAMPTZ, B.NUMERIC, B.MONEY, B.JSON, B.JSONB, B.UUID, B.OID, B.BPCHAR, B.TEXT, B.VARCHAR,
  B.BIT, B.VARBIT, B.INET, B.CIDR, B.XML, B.BYTEA,
  1561, 1000, 1001, 1014, 1002, 651, 1182, 1021, 1022, 1041, 1005, 1007, 1016, 3807, 199, 791, 1231,
  1028, 1009, 1115, 1183, 2951, 1563, 1015, 143,
]);
const UNMAPPED_ARRAYS = new Set([1003, 1006, 1008, 1010, 1011, 1012, 1013, 1034, 2210, 2211]);
const parseTextArray = pg.types.getTypeParser(1009);

function relabel(result) {
  const fields = result?.fields ?? [];
  fields.forEach((field, i) => {
    if (field.dataTypeID >= 10000 || MAPPED.has(field.dataTypeID)) return;
    const array = UNMAPPED_ARRAYS.has(field.dataTypeID);
    field.dataTypeID = array ? 1009 : B.TEXT;
    for (const row of result.rows) {
      const v = row[i];
      if (v === null || v === undefined) continue;
      if (array) row[i] = typeof v === 'string' ? parseTextArray(v) : v;
      else if (typeof v !== 'string') row[i] = typeof v === 'object' ? JSON.stringify(v) : String(v);
    }
  });
  return result;
}

for (const proto of [pg.Client.prototype, pg.Pool.prototype]) {
  const query = proto.query;
  proto.query = function (config, values, callback) {
    const out = query.call(this, config, values, callback);
    const adapterQuery = config !== null && typeof config === 'object' && config.rowMode === 'array';
    return adapterQuery && out && typeof out.then === 'function' ? out.then(relabel) : out;
  };
}

// ---- GraphQL (the subset prisma-client-py writes) -> JSON protocol ----

function tokenize(src) {
  const tokens = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (c === ' ' || c === '\n' || c === '\t' || c === '\r' || c === ',') {
      i++;
    } else if ('{}()[]:'.includes(c)) {
      tokens.push({ t: c });
      i++;
    } else if (c === '"') {
      let j = i + 1;
      while (src[j] !== '"') j += src[j] === '\\' ? 2 : 1;
      tokens.push({ t: 'value', v: JSON.parse(src.slice(i, j + 1)) });
      i = j + 1;
    } else if (c === '-' || (c >= '0' && c <= '9')) {
      const m = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(src.slice(i));
      tokens.push({ t: 'value', v: Number(m[0]), raw: m[0] });
      i += m[0].length;
    } else {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i));
      if (!m) throw new Error(`unexpected character ${JSON.stringify(c)} at ${i}`);
      tokens.push({ t: 'name', v: m[0] });
      i += m[0].length;
    }
  }
  return tokens;
}

class Parser {
  constructor(src) {
    this.tokens = tokenize(src);
    this.pos = 0;
  }
  peek() {
    return this.tokens[this.pos];
  }
  next(type) {
    const tok = this.tokens[this.pos++];
    if (!tok || (type && tok.t !== type)) throw new Error(`expected ${type}, got ${JSON.stringify(tok)}`);
    return tok;
  }
  document() {
    const operation = this.next('name').v;
    this.next('{');
    let name = this.next('name').v;
    if (this.peek().t === ':') {
      this.next(':');
      name = this.next('name').v;
    }
    const field = this.fieldRest(name);
    this.next('}');
    return { operation, ...field };
  }
  fieldRest(name) {
    const field = { name, args: {}, selection: null };
    if (this.peek()?.t === '(') field.args = this.args();
    if (this.peek()?.t === '{') field.selection = this.selection();
    return field;
  }
  args() {
    const args = {};
    this.next('(');
    while (this.peek().t !== ')') {
      const key = this.next('name').v;
      this.next(':');
      args[key] = this.value();
    }
    this.next(')');
    return args;
  }
  value() {
    const tok = this.next();
    if (tok.t === 'value') {
      // Integers beyond 2^53 (BigInt columns) must not go through a double.
      if (tok.raw && /^-?\d+$/.test(tok.raw) && !Number.isSafeInteger(tok.v)) {
        return { $type: 'BigInt', value: tok.raw };
      }
      return tok.v;
    }
    if (tok.t === 'name') {
      if (tok.v === 'true') return true;
      if (tok.v === 'false') return false;
      if (tok.v === 'null') return null;
      return { $type: 'Enum', value: tok.v };
    }
    if (tok.t === '{') {
      const obj = {};
      while (this.peek().t !== '}') {
        const key = this.next('name').v;
        this.next(':');
        obj[key] = this.value();
      }
      this.next('}');
      return obj;
    }
    if (tok.t === '[') {
      const list = [];
      while (this.peek().t !== ']') list.push(this.value());
      this.next(']');
      return list;
    }
    throw new Error(`unexpected ${JSON.stringify(tok)}`);
  }
  selection() {
    const sel = {};
    this.next('{');
    while (this.peek().t !== '}') {
      const name = this.next('name').v;
      const field = this.fieldRest(name);
      if (field.selection === null && Object.keys(field.args).length === 0) {
        sel[name] = true;
      } else {
        sel[name] = { arguments: field.args, selection: field.selection ?? {} };
      }
    }
    this.next('}');
    return sel;
  }
}

const ACTIONS = [
  'findUnique',
  'findFirst',
  'findMany',
  'createOne',
  'createMany',
  'updateOne',
  'updateMany',
  'upsertOne',
  'deleteOne',
  'deleteMany',
  'aggregate',
  'groupBy',
];

// Where the schema takes a Json value: the GraphQL protocol accepts Json as a string, the JSON
// protocol as {"$type": "Json", "value": string} (a bare string is stored as a JSON string).
// The input types come from the DMMF, reduced to {type name: {field: [[type, kind, isList]]}}.
function inputTypesOf(datamodel) {
  const digest = crypto.createHash('sha256').update(datamodel).digest('hex').slice(0, 16);
  const cacheDir = process.env.QUERY_ENGINE_SHIM_CACHE || os.tmpdir();
  const cached = pathlib.join(cacheDir, `prisma-input-types-${digest}.json`);
  try {
    return JSON.parse(fs.readFileSync(cached, 'utf8'));
  } catch {}
  const schemaWasm = require('@prisma/prisma-schema-wasm');
  const dmmf = JSON.parse(schemaWasm.get_dmmf(JSON.stringify({ prismaSchema: datamodel })));
  const compact = (inputTypes) => inputTypes.map((t) => [t.type, t.location, t.isList]);
  const types = {};
  for (const t of dmmf.schema.inputObjectTypes.prisma ?? []) {
    types[t.name] = Object.fromEntries(t.fields.map((f) => [f.name, compact(f.inputTypes)]));
  }
  for (const t of dmmf.schema.outputObjectTypes.prisma) {
    if (t.name !== 'Query' && t.name !== 'Mutation') continue;
    for (const f of t.fields) {
      types[`$root.${f.name}`] = Object.fromEntries(f.args.map((a) => [a.name, compact(a.inputTypes)]));
    }
  }
  try {
    fs.writeFileSync(`${cached}.${process.pid}`, JSON.stringify(types));
    fs.renameSync(`${cached}.${process.pid}`, cached);
  } catch {}
  return types;
}

let INPUT_TYPES = {};

function tagJson(value, candidates) {
  if (value === null || value === undefined || candidates.length === 0) return value;
  const json = candidates.some(([t, loc]) => t === 'Json' && loc === 'scalar');
  const string = candidates.some(([t, loc]) => t === 'String' && loc === 'scalar');
  const objects = candidates.filter(([, loc]) => loc === 'inputObjectTypes').map(([t]) => t);
  if (Array.isArray(value)) {
    const lists = candidates.filter(([, , isList]) => isList);
    if (lists.length > 0) return value.map((v) => tagJson(v, lists.map(([t, loc]) => [t, loc, false])));
    return json ? { $type: 'Json', value: JSON.stringify(value) } : value;
  }
  if (typeof value === 'string') return json && !string ? { $type: 'Json', value } : value;
  if (typeof value === 'object' && !('$type' in value)) {
    if (objects.length === 0) return json ? { $type: 'Json', value: JSON.stringify(value) } : value;
    return tagFields(value, objects);
  }
  return value;
}

function tagFields(obj, typeNames) {
  const out = {};
  for (const [key, v] of Object.entries(obj)) {
    const candidates = typeNames.flatMap((name) => INPUT_TYPES[name]?.[key] ?? []);
    out[key] = tagJson(v, candidates);
  }
  return out;
}

function toJsonQuery(graphql) {
  const doc = new Parser(graphql).document();
  if (doc.name === 'queryRaw' || doc.name === 'executeRaw') {
    const query = { arguments: doc.args, selection: doc.selection ?? {} };
    return { key: doc.name, raw: doc.name === 'queryRaw', body: { action: doc.name, query } };
  }
  const query = { arguments: tagFields(doc.args, [`$root.${doc.name}`]), selection: doc.selection ?? {} };
  for (const action of ACTIONS) {
    if (doc.name.startsWith(action)) {
      let model = doc.name.slice(action.length);
      let act = action;
      if (model.endsWith('OrThrow')) {
        model = model.slice(0, -'OrThrow'.length);
        act += 'OrThrow';
      }
      return { key: doc.name, raw: false, body: { modelName: model, action: act, query } };
    }
  }
  throw new Error(`unsupported operation ${doc.name}`);
}

// The JSON protocol tags DateTime, BigInt, Decimal, Bytes and Json values; the GraphQL protocol
// sends them as plain strings, which is what prisma-client-py parses.
function untag(value) {
  if (Array.isArray(value)) return value.map(untag);
  if (value !== null && typeof value === 'object') {
    if (typeof value.$type === 'string' && 'value' in value && Object.keys(value).length === 2) {
      return value.value;
    }
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = untag(v);
    return out;
  }
  return value;
}

// Raw query results come as {columns, types, rows}; prisma-client-py 0.11 (the version LiteLLM
// is written for) reads the older shape: one {column: {prisma__type, prisma__value}} per row.
function legacyRaw(raw) {
  if (!raw || !Array.isArray(raw.columns)) return raw;
  const cell = (type, value) => {
    if (value === null || value === undefined) return { prisma__type: 'null', prisma__value: null };
    if (type.endsWith('-array') && Array.isArray(value)) {
      const inner = type.slice(0, -'-array'.length);
      return { prisma__type: 'array', prisma__value: value.map((v) => cell(inner, v)) };
    }
    return { prisma__type: type, prisma__value: value };
  };
  return raw.rows.map((row) => Object.fromEntries(raw.columns.map((c, i) => [c, cell(raw.types[i], row[i])])));
}

function translateResult(result, translated) {
  if (result.data === undefined) return result;
  const data = result.data[translated.key];
  return { ...result, data: { result: translated.raw ? legacyRaw(data) : untag(data) } };
}

// ---- engine ----

function parseArgs(argv) {
  let port = 4466;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '-p' || argv[i] === '--port') port = Number(argv[++i]);
    else if (argv[i].startsWith('--port=')) port = Number(argv[i].slice(7));
  }
  return { port };
}

function databaseUrl(datamodel) {
  if (process.env.OVERWRITE_DATASOURCES) {
    const overrides = JSON.parse(process.env.OVERWRITE_DATASOURCES);
    if (overrides.length > 0 && overrides[0].url) return overrides[0].url;
  }
  const m = /url\s*=\s*env\("([^"]+)"\)/.exec(datamodel);
  const url = m ? process.env[m[1]] : /url\s*=\s*"([^"]+)"/.exec(datamodel)?.[1];
  if (!url) throw new Error('no datasource url');
  return url;
}

// Prisma's connection-string parameters are not libpq's: keep what pg understands.
function poolConfig(url) {
  const u = new URL(url);
  const params = u.searchParams;
  const options = [];
  const schema = params.get('schema');
  if (schema) options.push(`-c search_path=${schema}`);
  if (params.get('options')) options.push(params.get('options'));
  const config = {
    host: decodeURIComponent(u.hostname) || params.get('host') || undefined,
    port: u.port ? Number(u.port) : params.get('port') ? Number(params.get('port')) : 5432,
    user: decodeURIComponent(u.username) || undefined,
    password: decodeURIComponent(u.password) || undefined,
    database: decodeURIComponent(u.pathname.slice(1)) || undefined,
    max: Number(params.get('connection_limit') || 10),
    connectionTimeoutMillis: Number(params.get('pool_timeout') || 10) * 1000,
  };
  if (params.get('host')) config.host = params.get('host');
  if (options.length) config.options = options.join(' ');
  if (params.get('application_name')) config.application_name = params.get('application_name');
  return config;
}

async function loadEngine(datamodel) {
  const wasmPath = require.resolve('@prisma/query-engine-wasm/postgresql/query_engine_bg.wasm');
  const module = await WebAssembly.compile(fs.readFileSync(wasmPath));
  const instance = await WebAssembly.instantiate(module, { './query_engine_bg.js': qe });
  qe.__wbg_set_wasm(instance.exports);
  const pool = new pg.Pool(poolConfig(databaseUrl(datamodel)));
  pool.on('error', (err) => console.error('pg pool error:', err.message));
  const logLevel = (process.env.RUST_LOG || 'error').split(',')[0];
  const engine = new qe.QueryEngine(
    { datamodel, logLevel, logQueries: Boolean(process.env.LOG_QUERIES) },
    (line) => {
      if (logLevel !== 'error' || /"level":"ERROR"/i.test(line)) console.error(line);
    },
    bindAdapter(new PrismaPg(pool)),
  );
  await engine.connect('{}');
  return engine;
}

const TRACE = '{}';

function errorBody(err) {
  const message = String(err?.message ?? err);
  return { errors: [{ error: message, user_facing_error: { is_panic: false, message } }] };
}

async function handleQuery(engine, body, txId) {
  const request = JSON.parse(body);
  if (Array.isArray(request.batch)) {
    const translated = request.batch.map((q) => toJsonQuery(q.query));
    const jsonBody = { batch: translated.map((t) => t.body) };
    if (request.transaction) jsonBody.transaction = {};
    const result = JSON.parse(await engine.query(JSON.stringify(jsonBody), TRACE, txId));
    if (Array.isArray(result.batchResult)) {
      result.batchResult = result.batchResult.map((r, i) => translateResult(r, translated[i]));
    }
    return result;
  }
  const translated = toJsonQuery(request.query);
  const result = JSON.parse(await engine.query(JSON.stringify(translated.body), TRACE, txId));
  return translateResult(result, translated);
}

async function main() {
  if (process.argv[2] === '--input-types') {
    inputTypesOf(fs.readFileSync(process.argv[3], 'utf8'));
    return;
  }
  const { port } = parseArgs(process.argv.slice(2));
  const dmlPath = process.env.PRISMA_DML_PATH;
  const datamodel = dmlPath ? fs.readFileSync(dmlPath, 'utf8') : Buffer.from(process.env.PRISMA_DML, 'base64').toString();
  INPUT_TYPES = inputTypesOf(datamodel);
  const engine = await loadEngine(datamodel);

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString();
      const send = (status, obj) => {
        const text = JSON.stringify(obj);
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      };
      try {
        const path = req.url.split('?')[0];
        let m;
        if (req.method === 'GET' && path === '/status') {
          send(200, { status: 'ok' });
        } else if (req.method === 'POST' && path === '/') {
          send(200, await handleQuery(engine, body, req.headers['x-transaction-id']));
        } else if (req.method === 'POST' && path === '/transaction/start') {
          send(200, JSON.parse(await engine.startTransaction(body || '{}', TRACE)));
        } else if (req.method === 'POST' && (m = /^\/transaction\/([^/]+)\/(commit|rollback)$/.exec(path))) {
          const out = m[2] === 'commit' ? engine.commitTransaction(m[1], TRACE) : engine.rollbackTransaction(m[1], TRACE);
          send(200, JSON.parse(await out));
        } else if (req.method === 'GET' && path === '/metrics') {
          send(200, { counters: [], gauges: [], histograms: [] });
        } else {
          send(404, errorBody(`no route ${req.method} ${path}`));
        }
      } catch (err) {
        send(200, errorBody(err));
      }
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(port);

  // Exit with the process that started us, as the real engine does once its pipes close.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(0);
  }, 1000).unref();
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
}

main().catch((err) => {
  console.error('query-engine shim failed:', err);
  process.exit(1);
});
