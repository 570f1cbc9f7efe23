// The single entry point for CI and for people: `npm run check` (after `npm ci`).
// Runs every check against the real server, goes on after a failure so that
// one run shows everything, prints a summary, and exits 1 if anything failed.
//   1. GraphQL over HTTP conformance: the graphql-http server audits
//   2. Apollo Client, urql, introspection, example operations, a Standard Webhooks receiver,
//      live updates over graphql-ws and graphql-sse,
//      the guard's own tests (node --test)
//   3. Schema-driven codegen: @graphql-codegen/cli with examples/codegen.ts, then tsc --noEmit
//      on the README's Apollo example and typed-usage.ts
//   4. Breaking-change guard: @graphql-inspector/cli against the previous commit's schema.graphql
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serverBinary } from './server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const node = process.execPath;

export const TEST_FILES = [
  'clients.test.mjs',
  'introspection.test.mjs',
  'operations.test.mjs',
  'webhooks.test.mjs',
  'live.test.mjs',
  'schema-guard.test.mjs',
];

const STEPS = [
  ['GraphQL over HTTP conformance (graphql-http server audits)', [[node, 'audit.mjs']]],
  ['Clients, introspection, example operations, webhooks and live updates (node --test)', [[node, '--test', '--test-reporter=spec', ...TEST_FILES]]],
  [
    'Schema-driven codegen (@graphql-codegen/cli, tsc --noEmit)',
    [[node, 'codegen-check.mjs']],
  ],
  ['Breaking-change guard (@graphql-inspector/cli)', [[node, 'schema-guard.mjs']]],
];

let binary;
try {
  binary = serverBinary();
} catch (error) {
  console.error(error.message);
  process.exit(1);
}
console.log(`Server binary: ${binary}`);
console.log(
  process.env.TEST_DATABASE_URL
    ? `Databases: SQLite, and Postgres on ${process.env.TEST_DATABASE_URL} for the client tests`
    : 'Databases: SQLite (set TEST_DATABASE_URL to run the client tests on Postgres too)',
);

const results = [];
for (const [title, commands] of STEPS) {
  console.log(`\n=== ${title}\n`);
  const started = Date.now();
  let ok = true;
  for (const [command, ...args] of commands) {
    const result = spawnSync(command, args, { cwd: HERE, stdio: 'inherit' });
    if (result.error) console.error(`cannot run ${command}: ${result.error.message}`);
    if (result.status !== 0) {
      ok = false;
      break;
    }
  }
  results.push({ title, ok, seconds: ((Date.now() - started) / 1000).toFixed(1) });
}

console.log('\n=== Summary\n');
for (const { title, ok, seconds } of results) console.log(`${ok ? '✓' : '✗'} ${title} (${seconds} s)`);
const failed = results.filter((r) => !r.ok).length;
console.log(failed ? `\nFAIL: ${failed} of ${results.length} checks failed.` : `\nPASS: all ${results.length} checks passed.`);
process.exitCode = failed ? 1 : 0;
