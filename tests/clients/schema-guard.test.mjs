// The breaking-change guard itself, run on throwaway git repositories: it must
// fail on a breaking change, pass on additions, and honour both overrides.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { intendedCoordinates } from './schema-guard.mjs';
import { schemaSource } from './operations.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const GUARD = path.join(HERE, 'schema-guard.mjs');
const INTENDED = path.join('tests', 'clients', 'intended-breaking-changes.md');
// Git in the throwaway repositories ignores the user's and the system's settings.
const GIT_ENV = {
  ...process.env,
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_AUTHOR_NAME: 'Schema Guard Test',
  GIT_AUTHOR_EMAIL: 'guard@example.invalid',
  GIT_COMMITTER_NAME: 'Schema Guard Test',
  GIT_COMMITTER_EMAIL: 'guard@example.invalid',
};

const SCHEMA = schemaSource();
// OnboardingState.userId, with its description (other types have a userId too).
const WITHOUT_USER_ID = SCHEMA.replace(/^(type OnboardingState \{\n(?: .*\n)*?) *".*"\n *userId: String!\n/m, '$1');
const WITH_NEW_FIELD = SCHEMA.replace('type Query {', 'type Query {\n  "Added."\n  version: String!');

let root;
let count = 0;

function git(repo, ...args) {
  const result = spawnSync('git', ['-C', repo, ...args], { env: GIT_ENV, encoding: 'utf8' });
  assert.equal(result.status, 0, `git ${args.join(' ')}: ${result.stderr}`);
}

/** A repository whose commits are `commits`: each { files: { path: text }, message }. */
function repository(commits) {
  const repo = path.join(root, `repo-${++count}`);
  mkdirSync(repo);
  git(repo, 'init', '-q', '-b', 'main');
  for (const { files, message } of commits) {
    for (const [file, text] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(repo, file)), { recursive: true });
      writeFileSync(path.join(repo, file), text);
    }
    git(repo, 'add', '-A');
    git(repo, 'commit', '-q', '--allow-empty', '-m', message);
  }
  return repo;
}

function guard(repo) {
  const result = spawnSync(process.execPath, [GUARD, repo], { encoding: 'utf8', env: { ...process.env, SCHEMA_GUARD_BASE: '' } });
  return { status: result.status, output: result.stdout + result.stderr };
}

describe('the breaking-change guard', () => {
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'schema-guard-test-'));
  });
  after(() => rm(root, { recursive: true, force: true }));

  test('passes and says so when there is no previous commit', () => {
    const { status, output } = guard(repository([{ files: { 'schema.graphql': SCHEMA }, message: 'first' }]));
    assert.equal(status, 0, output);
    assert.match(output, /there is no commit HEAD~1/);
  });

  test('passes and says so when the previous commit had no schema.graphql', () => {
    const repo = repository([
      { files: { README: 'hi' }, message: 'first' },
      { files: { 'schema.graphql': SCHEMA }, message: 'schema' },
    ]);
    const { status, output } = guard(repo);
    assert.equal(status, 0, output);
    assert.match(output, /did not exist at HEAD~1/);
  });

  test('passes when a field is added', () => {
    const repo = repository([
      { files: { 'schema.graphql': SCHEMA }, message: 'first' },
      { files: { 'schema.graphql': WITH_NEW_FIELD }, message: 'add a field' },
    ]);
    const { status, output } = guard(repo);
    assert.equal(status, 0, output);
    assert.match(output, /No breaking changes detected/);
  });

  test('fails on a removed field, naming the change and its coordinate', () => {
    assert.notEqual(WITHOUT_USER_ID, SCHEMA);
    const repo = repository([
      { files: { 'schema.graphql': SCHEMA }, message: 'first' },
      { files: { 'schema.graphql': WITHOUT_USER_ID }, message: 'drop userId' },
    ]);
    const { status, output } = guard(repo);
    assert.equal(status, 1, output);
    assert.match(output, /Field 'userId' was removed from object type 'OnboardingState'/);
    assert.match(output, /`OnboardingState\.userId`/);
  });

  test('fails on a breaking change even with the shipped intended-changes file and its example', () => {
    const repo = repository([
      { files: { 'schema.graphql': SCHEMA, [INTENDED]: readFileSync(path.join(HERE, 'intended-breaking-changes.md'), 'utf8') }, message: 'first' },
      { files: { 'schema.graphql': WITHOUT_USER_ID }, message: 'drop userId' },
    ]);
    assert.equal(guard(repo).status, 1);
  });

  test('passes a breaking change when the commit message says "Schema-Breaking-Change: intended"', () => {
    const repo = repository([
      { files: { 'schema.graphql': SCHEMA }, message: 'first' },
      { files: { 'schema.graphql': WITHOUT_USER_ID }, message: 'Drop userId\n\nSchema-Breaking-Change: intended\n' },
    ]);
    const { status, output } = guard(repo);
    assert.equal(status, 0, output);
    assert.match(output, /declared intended by "Schema-Breaking-Change: intended"/);
  });

  test('passes a breaking change listed in intended-breaking-changes.md, and only that one', () => {
    const listed = (coordinate) => `# Intended breaking changes\n\n## Intended changes\n\n- \`${coordinate}\`: clients moved\n`;
    const intended = repository([
      { files: { 'schema.graphql': SCHEMA }, message: 'first' },
      { files: { 'schema.graphql': WITHOUT_USER_ID, [INTENDED]: listed('OnboardingState.userId') }, message: 'drop userId' },
    ]);
    const passed = guard(intended);
    assert.equal(passed.status, 0, passed.output);
    assert.match(passed.output, /each listed as intended/);

    const other = repository([
      { files: { 'schema.graphql': SCHEMA }, message: 'first' },
      { files: { 'schema.graphql': WITHOUT_USER_ID, [INTENDED]: listed('OnboardingState.createdAt') }, message: 'drop userId' },
    ]);
    assert.equal(guard(other).status, 1);
  });

  test('reads only bullets under "Intended changes", outside code blocks', () => {
    const text = [
      '# Intended', '- `Query.onboardingState`: not under the heading', '', '## Intended changes',
      '```', '- `Mutation.resetOnboarding`: in a code block', '```', '- `OnboardingState.userId`: yes',
      '* `OnboardingState`: yes too', '', '## Notes', '- `Mutation`: no',
    ].join('\n');
    assert.deepEqual([...intendedCoordinates(text)], ['OnboardingState.userId', 'OnboardingState']);
  });

  test('passes and says so outside a git checkout', async () => {
    const dir = path.join(root, 'not-a-repo');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'schema.graphql'), SCHEMA);
    const result = spawnSync(process.execPath, [GUARD, dir], {
      encoding: 'utf8',
      env: { ...process.env, GIT_CEILING_DIRECTORIES: root },
    });
    assert.equal(result.status, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /not a git checkout/);
  });
});
