// GraphQL over HTTP conformance: runs every server audit of the `graphql-http`
// package against the live /graphql URL and prints each result.
//
//   node audit.mjs                 starts the real server (fresh SQLite database) and audits it
//   node audit.mjs URL             audits a server that is already running, e.g. http://127.0.0.1:8080/graphql
//
// Fails (exit 1) on any failed MUST audit, and on any failed SHOULD audit that is
// not listed in ACCEPTED_SHOULD_FAILURES below (each of which README.md explains).
// MAY audits are printed for information only.
import { serverAudits } from 'graphql-http';
import { pathToFileURL } from 'node:url';
import { startServer } from './server.mjs';

/**
 * SHOULD audits this server knowingly does not pass: audit id -> reason. Keep it in
 * step with the "GraphQL over HTTP conformance" part of README.md. Empty: every
 * SHOULD audit passes.
 */
export const ACCEPTED_SHOULD_FAILURES = {};

function level(name) {
  return name.split(' ')[0]; // MUST, SHOULD or MAY
}

async function describeResponse(response) {
  if (!response) return '';
  let body = '';
  try {
    body = await response.clone().text();
  } catch {
    body = '(body already read)';
  }
  if (body.length > 300) body = `${body.slice(0, 300)}...`;
  const type = response.headers.get('content-type') ?? '(none)';
  return `answered ${response.status}, content-type ${type}, body ${body || '(empty)'}`;
}

/** Runs every server audit against `url`, one after another. */
export async function runAudits(url) {
  const results = [];
  for (const audit of serverAudits({ url })) {
    const result = await audit.fn();
    results.push({
      id: result.id,
      name: result.name,
      level: level(result.name),
      ok: result.status === 'ok',
      reason: result.status === 'ok' ? '' : result.reason,
      response: result.status === 'ok' ? '' : await describeResponse(result.response),
    });
  }
  return results;
}

/** Prints the results; returns the number of failures that fail the run. */
export function report(results, print = console.log) {
  let failing = 0;
  for (const r of results) {
    const accepted = !r.ok && r.level === 'SHOULD' && ACCEPTED_SHOULD_FAILURES[r.id];
    const fails = !r.ok && (r.level === 'MUST' || (r.level === 'SHOULD' && !accepted));
    if (fails) failing += 1;
    const mark = r.ok ? '✓' : fails ? '✗' : '-';
    print(`${mark} ${r.id} ${r.name}`);
    if (!r.ok) {
      print(`    reason: ${r.reason}`);
      if (r.response) print(`    server ${r.response}`);
      if (accepted) print(`    accepted: ${accepted}`);
      else if (!fails) print('    (MAY: optional, not required)');
    }
  }
  const count = (lvl, ok) => results.filter((r) => r.level === lvl && r.ok === ok).length;
  print(
    `\nGraphQL over HTTP audits: ${results.length} run; ` +
      `MUST ${count('MUST', true)} passed, ${count('MUST', false)} failed; ` +
      `SHOULD ${count('SHOULD', true)} passed, ${count('SHOULD', false)} failed` +
      `${Object.keys(ACCEPTED_SHOULD_FAILURES).length ? ' (accepted ones listed above)' : ''}; ` +
      `MAY ${count('MAY', true)} passed, ${count('MAY', false)} not implemented.`,
  );
  print(failing ? `FAIL: ${failing} required audit(s) failed.` : 'PASS: every MUST and SHOULD audit passed.');
  return failing;
}

async function main() {
  const given = process.argv[2] ?? process.env.GRAPHQL_URL;
  if (given) {
    console.log(`Auditing ${given}\n`);
    process.exitCode = report(await runAudits(given)) ? 1 : 0;
    return;
  }
  const server = await startServer({ backend: 'sqlite' });
  try {
    console.log(`Auditing ${server.graphqlUrl} (onboarding serve, SQLite)\n`);
    process.exitCode = report(await runAudits(server.graphqlUrl)) ? 1 : 0;
  } finally {
    await server.stop();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    console.error(error);
    process.exitCode = 1;
  });
}
