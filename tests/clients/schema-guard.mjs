// Breaking-change guard: compares schema.graphql with the one on the previous
// commit (`git show HEAD~1:schema.graphql`) using @graphql-inspector/cli, and
// fails on a breaking change unless it is declared intended, either
//   - by a line `Schema-Breaking-Change: intended` in the HEAD commit message, or
//   - by listing the schema coordinate of each breaking change (for example
//     `OnboardingState.userId`) under "## Intended changes" in
//     tests/clients/intended-breaking-changes.md.
// With no previous commit, or no schema.graphql there, it says so and passes.
//
//   node schema-guard.mjs [REPO_DIR]     (default: this repository)
//   SCHEMA_GUARD_BASE=origin/main node schema-guard.mjs   compares with another commit
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { CriticalityLevel, diff } from '@graphql-inspector/core';
import { buildSchema } from 'graphql';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const INSPECTOR = path.join(HERE, 'node_modules', '.bin', 'graphql-inspector');
export const TRAILER = /^Schema-Breaking-Change:\s*intended\s*$/im;
export const INTENDED_FILE = path.join('tests', 'clients', 'intended-breaking-changes.md');

function git(repo, args) {
  const result = spawnSync('git', ['-C', repo, ...args], { encoding: 'utf8' });
  return { ok: result.status === 0, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

/**
 * The coordinates listed in the intended-changes file: bullets under the heading
 * "## Intended changes" that start with a coordinate in backticks (`Type.field`).
 */
export function intendedCoordinates(text) {
  const coordinates = new Set();
  let inList = false;
  let inFence = false;
  for (const line of text.split('\n')) {
    if (/^\s*```/.test(line)) inFence = !inFence;
    if (inFence) continue;
    if (/^#{1,6}\s/.test(line)) inList = /^##\s+Intended changes\s*$/i.test(line);
    const match = inList && line.match(/^[-*]\s+`([A-Za-z_][\w.]*)`/);
    if (match) coordinates.add(match[1]);
  }
  return coordinates;
}

function covered(change, coordinates) {
  if (!change.path) return false;
  for (const coordinate of coordinates) {
    if (change.path === coordinate || change.path.startsWith(`${coordinate}.`)) return true;
  }
  return false;
}

async function guard(repo, base) {
  console.log(`Breaking-change guard: schema.graphql against ${base}:schema.graphql (graphql-inspector)`);
  if (!git(repo, ['rev-parse', '--git-dir']).ok) {
    console.log(`PASS: ${repo} is not a git checkout, so there is no previous schema to compare with.`);
    return 0;
  }
  if (!git(repo, ['rev-parse', '--verify', '--quiet', `${base}^{commit}`]).ok) {
    console.log(
      `PASS: there is no commit ${base} (the first commit, or a shallow clone: fetch with --depth=2 or more), ` +
        'so there is no previous schema to compare with.',
    );
    return 0;
  }
  const previous = git(repo, ['show', `${base}:schema.graphql`]);
  if (!previous.ok) {
    console.log(`PASS: schema.graphql did not exist at ${base}, so there is no previous schema to compare with.`);
    return 0;
  }
  const currentPath = path.join(repo, 'schema.graphql');
  if (!existsSync(currentPath)) {
    console.log('FAIL: schema.graphql is missing, and it existed on the previous commit.');
    return 1;
  }

  const dir = await mkdtemp(path.join(tmpdir(), 'schema-guard-'));
  let inspector;
  try {
    const previousPath = path.join(dir, `previous-schema.graphql`);
    await writeFile(previousPath, previous.stdout);
    inspector = spawnSync(INSPECTOR, ['diff', previousPath, currentPath], { encoding: 'utf8' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(inspector.stdout ?? '');
  process.stdout.write(inspector.stderr ?? '');
  if (inspector.error) throw inspector.error;

  const changes = await diff(buildSchema(previous.stdout), buildSchema(readFileSync(currentPath, 'utf8')));
  const breaking = changes.filter((change) => change.criticality.level === CriticalityLevel.Breaking);
  const dangerous = changes.filter((change) => change.criticality.level === CriticalityLevel.Dangerous);
  for (const change of dangerous) console.log(`warning: dangerous change: ${change.message}`);

  if (breaking.length === 0) {
    if (inspector.status !== 0) {
      console.log(`FAIL: graphql-inspector exited with ${inspector.status} without reporting a breaking change.`);
      return 1;
    }
    console.log('PASS: no breaking change.');
    return 0;
  }
  if (inspector.status === 0) {
    console.log('FAIL: graphql-inspector passed, yet @graphql-inspector/core finds breaking changes.');
    return 1;
  }

  const message = git(repo, ['log', '-1', '--format=%B', 'HEAD']).stdout;
  if (TRAILER.test(message)) {
    console.log(
      `PASS: ${breaking.length} breaking change(s), declared intended by "Schema-Breaking-Change: intended" in the HEAD commit message.`,
    );
    return 0;
  }
  const intendedPath = path.join(repo, INTENDED_FILE);
  const coordinates = existsSync(intendedPath) ? intendedCoordinates(readFileSync(intendedPath, 'utf8')) : new Set();
  const unintended = breaking.filter((change) => !covered(change, coordinates));
  if (unintended.length === 0) {
    console.log(`PASS: ${breaking.length} breaking change(s), each listed as intended in ${INTENDED_FILE}.`);
    return 0;
  }
  console.log(`FAIL: ${unintended.length} breaking change(s) to schema.graphql that clients would notice:`);
  for (const change of unintended) {
    console.log(`  ✗ ${change.message}${change.path ? ` (coordinate \`${change.path}\`)` : ''}`);
  }
  console.log(
    'If the break is intended, add a line "Schema-Breaking-Change: intended" to the commit message, ' +
      `or list each coordinate as a bullet in ${INTENDED_FILE}, e.g.\n  - \`${unintended[0].path ?? 'Type.field'}\`: why, and who was told`,
  );
  return 1;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const repo = path.resolve(process.argv[2] ?? path.join(HERE, '..', '..'));
  const base = process.env.SCHEMA_GUARD_BASE || 'HEAD~1';
  guard(repo, base).then(
    (code) => {
      process.exitCode = code;
    },
    (error) => {
      console.error(error);
      process.exitCode = 1;
    },
  );
}
