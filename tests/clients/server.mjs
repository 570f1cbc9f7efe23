// Starts the real `onboarding serve` for the client tests: a free port, a fresh
// database (a temporary SQLite file, or a new Postgres database on the server of
// TEST_DATABASE_URL), a random JWT_SECRET; mints tokens with `onboarding token`;
// stops the server with SIGTERM and removes the database afterwards.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..');

/** The server binary: ONBOARDING_BIN, else $CARGO_TARGET_DIR/debug, else the shared build dir. */
export function serverBinary() {
  if (process.env.ONBOARDING_BIN) {
    if (!existsSync(process.env.ONBOARDING_BIN)) {
      throw new Error(`ONBOARDING_BIN=${process.env.ONBOARDING_BIN} does not exist: run \`cargo build\``);
    }
    return process.env.ONBOARDING_BIN;
  }
  const candidates = [
    process.env.CARGO_TARGET_DIR && path.join(process.env.CARGO_TARGET_DIR, 'debug', 'onboarding'),
    path.join(homedir(), '.cache', 'onboarding-target', 'debug', 'onboarding'),
    path.join(REPO_ROOT, 'target', 'debug', 'onboarding'),
  ].filter(Boolean);
  const found = candidates.find((candidate) => existsSync(candidate));
  if (!found) {
    throw new Error(`no server binary in ${candidates.join(', ')}: run \`cargo build\` or set ONBOARDING_BIN`);
  }
  return found;
}

/** The backends to run database-dependent tests on: SQLite always, Postgres when TEST_DATABASE_URL is set. */
export function backends() {
  return process.env.TEST_DATABASE_URL ? ['sqlite', 'postgres'] : ['sqlite'];
}

async function freePort() {
  const probe = createServer();
  await new Promise((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', resolve);
  });
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** The environment of the parent without any setting that would change the server under test. */
function cleanEnv() {
  const env = { ...process.env };
  for (const name of Object.keys(env)) {
    if (name.startsWith('JWT_') || name.startsWith('DATABASE_') || name === 'LISTEN_ADDR') delete env[name];
  }
  return env;
}

async function psql(url, sql) {
  await run('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { timeout: 30_000 });
}

/** A fresh database: a SQLite file in a temporary folder, or a new database on TEST_DATABASE_URL's server. */
async function createDatabase(backend, dataDir) {
  if (backend === 'sqlite') {
    return { url: `sqlite://${dataDir}/onboarding.db`, drop: async () => {} };
  }
  const admin = process.env.TEST_DATABASE_URL;
  if (!admin) throw new Error('the postgres backend needs TEST_DATABASE_URL');
  const name = `onboarding_clients_${randomBytes(6).toString('hex')}`;
  try {
    await psql(admin, `CREATE DATABASE ${name}`);
  } catch (error) {
    throw new Error(`cannot create a database with psql on TEST_DATABASE_URL=${admin}: ${error.stderr || error.message}`);
  }
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: () => psql(admin, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}

const running = new Set();
// Never leave a server behind, even when a test process dies on an uncaught error.
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * Starts `onboarding serve` and waits for /healthz; `env` adds settings (e.g. WEBHOOK_ALLOW_PRIVATE).
 * `sharing` names a server already running whose database (and secret) this one shares: a
 * second replica, which leaves the database to the first to remove.
 * Returns { baseUrl, graphqlUrl, backend, databaseUrl, pid, token(sub, opts), command(args), stop(), output() }.
 */
export async function startServer({ backend = 'sqlite', env: settings = {}, sharing } = {}) {
  const bin = serverBinary();
  const port = await freePort();
  const dataDir = await mkdtemp(path.join(tmpdir(), 'onboarding-clients-'));
  const database = sharing
    ? { url: sharing.databaseUrl, drop: async () => {} }
    : await createDatabase(backend, dataDir);
  const secret = sharing ? sharing.secret : randomBytes(32).toString('hex');
  const env = {
    ...cleanEnv(),
    DATABASE_URL: database.url,
    LISTEN_ADDR: `127.0.0.1:${port}`,
    JWT_SECRET: secret,
    RUST_LOG: process.env.RUST_LOG ?? 'warn',
    ...settings,
  };

  const child = spawn(bin, ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.once('exit', () => running.delete(child));

  const baseUrl = `http://127.0.0.1:${port}`;
  let stopped = false;
  const server = {
    backend,
    baseUrl,
    graphqlUrl: `${baseUrl}/graphql`,
    databaseUrl: database.url,
    secret,
    pid: child.pid,
    output: () => output,

    /** A token for `sub` signed with this server's secret (`onboarding token`), naming `group` in `org_id` when given. */
    async token(sub, { role, group, ttl = '1h' } = {}) {
      const args = ['token', '--sub', sub, '--ttl', ttl];
      if (role) args.push('--role', role);
      if (group) args.push('--group', group);
      const { stdout } = await run(bin, args, { env: { ...cleanEnv(), JWT_SECRET: secret } });
      const token = stdout.trim();
      if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) throw new Error(`\`onboarding token\` printed no JWT: ${stdout}`);
      return token;
    },

    /** Runs `onboarding ARGS...` on this server's database with its settings; resolves to { stdout, stderr }. */
    command(args) {
      return run(bin, args, { env: { ...cleanEnv(), DATABASE_URL: database.url, ...settings }, timeout: 60_000 });
    },

    /** SIGTERM, wait for the exit (SIGKILL after 10 s), then remove the database. */
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      try {
        await database.drop();
      } finally {
        await rm(dataDir, { recursive: true, force: true });
      }
    },
  };

  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`the server exited early (${child.exitCode ?? child.signalCode}):\n${output}`);
      }
      if (Date.now() > deadline) throw new Error(`/healthz did not answer 200 within 60 s:\n${output}`);
      const healthy = await fetch(`${baseUrl}/healthz`).then((r) => r.status === 200, () => false);
      if (healthy) return server;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } catch (error) {
    await server.stop();
    throw error;
  }
}

/** Runs `fn(server)` against a fresh server and always stops it. */
export async function withServer(options, fn) {
  const server = await startServer(options);
  try {
    return await fn(server);
  } finally {
    await server.stop();
  }
}
