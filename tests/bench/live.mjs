// Live updates under load, for tests/bench/run: two server processes on one
// Postgres database, SUBSCRIPTIONS open subscriptions (each a user of its
// own on a WebSocket of its own, half on each server), then writes at a
// steady RATE for SECONDS, each through the other server than its user's
// subscriber. Prints one tab-separated line:
//
//   live  subscriptions  writes  rate  p50_ms  p99_ms  max_ms  missed
//         rss_kib_per_subscription  cpu_us_per_write  cpu_us_per_write_unwatched  failed_writes
//
// Latency is from sending the write to its subscriber's message with the new
// revision. The servers run on SERVER_CORE (taskset), this script wherever
// it was started. Usage:
//   node tests/bench/live.mjs BINARY DATABASE_URL SERVER_CORE [SUBSCRIPTIONS] [RATE] [SECONDS]
// with JWT_SECRET in the environment (and TOKENS, a file of tokens of distinct users, one a line,
// when there is one). Needs tests/clients' `ws` (npm ci there).
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { promisify } from 'node:util';

const require = createRequire(new URL('../clients/package.json', import.meta.url));
const WebSocket = require('ws');
const run = promisify(execFile);

const [binary, databaseUrl, serverCore, subscriptionsArg, rateArg, secondsArg] = process.argv.slice(2);
if (!binary || !databaseUrl || !serverCore || !process.env.JWT_SECRET) {
  console.error('usage: JWT_SECRET=... node tests/bench/live.mjs BINARY DATABASE_URL SERVER_CORE [SUBSCRIPTIONS] [RATE] [SECONDS]');
  process.exit(2);
}
const SUBSCRIPTIONS = Number(subscriptionsArg ?? 1000);
const RATE = Number(rateArg ?? 200);
const SECONDS = Number(secondsArg ?? 10);
const STEPS = ['one', 'two', 'three', 'four', 'five'];
const TICKS_PER_SECOND = 100; // CLK_TCK on Linux

async function freePort() {
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

async function startReplica() {
  const port = await freePort();
  const child = spawn('taskset', ['-c', serverCore, binary, 'serve'], {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      LISTEN_ADDR: `127.0.0.1:${port}`,
      RUST_LOG: 'warn',
      MAX_CONNECTIONS: String(SUBSCRIPTIONS + 256),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  while (!(await fetch(`${url}/healthz`).then((r) => r.ok, () => false))) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error('a replica did not start');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { child, url, pid: child.pid };
}

function rssKib(pid) {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
}

function cpuTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

async function token(sub, role) {
  const { stdout } = await run(binary, ['token', '--ttl', '2h', '--sub', sub, ...(role ? ['--role', role] : [])]);
  return stdout.trim();
}

async function graphql(url, bearer, query, variables = {}) {
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

/** A subscriber: its socket, the revision it last saw, and the write it waits for. */
function subscribe(replica, bearer) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`${replica.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws');
    const subscriber = { socket, revision: -1, waiting: null, latencies: null };
    socket.on('error', reject);
    socket.on('open', () =>
      socket.send(JSON.stringify({ type: 'connection_init', payload: { Authorization: `Bearer ${bearer}` } })),
    );
    socket.on('message', (data) => {
      const message = JSON.parse(data.toString());
      if (message.type === 'connection_ack') {
        socket.send(
          JSON.stringify({
            id: '1',
            type: 'subscribe',
            payload: { query: 'subscription { flowStateChanged(flow: "live") { revision } }' },
          }),
        );
      } else if (message.type === 'next') {
        subscriber.revision = message.payload.data.flowStateChanged.revision;
        const waiting = subscriber.waiting;
        if (waiting && subscriber.revision > waiting.after) {
          subscriber.latencies.push(performance.now() - waiting.sentAt);
          subscriber.waiting = null;
        }
        resolve(subscriber);
      } else if (message.type === 'ping') {
        socket.send('{"type":"pong"}');
      } else if (message.type === 'error') {
        reject(new Error(JSON.stringify(message.payload)));
      }
    });
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Writes at RATE for SECONDS, each to the next subscriber's user through `through(i)`. */
async function writeSteadily(users, through, latencies) {
  const interval = 1000 / RATE;
  const total = RATE * SECONDS;
  const started = performance.now();
  const inFlight = [];
  for (let n = 0; n < total; n += 1) {
    const due = started + n * interval;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const user = users[n % users.length];
    const step = STEPS[Math.floor(n / users.length) % STEPS.length];
    if (user.subscriber) {
      user.subscriber.latencies = latencies;
      user.subscriber.waiting = { after: user.subscriber.revision, sentAt: performance.now() };
    }
    const subscriber = user.subscriber;
    inFlight.push(
      graphql(through(n % users.length).url, user.token, 'mutation($step: String!) { completeStep(flow: "live", step: $step) { revision } }', {
        step,
      }).catch((error) => {
        // Counted apart: a write that failed has no change to deliver.
        failures.push(error.message);
        if (subscriber) subscriber.waiting = null;
      }),
    );
  }
  await Promise.all(inFlight);
  return total;
}

/** The writes the server refused, with why. */
const failures = [];

async function main() {
  const replicas = [await startReplica(), await startReplica()];
  try {
    const admin = await token('bench-live-admin', 'admin');
    await graphql(
      replicas[0].url,
      admin,
      `mutation { publishFlow(input: {key: "live", title: "Live", steps: [${STEPS.map((key) => `{key: "${key}", title: "${key}"}`).join(', ')}]}) { key } }`,
    );
    // A token per user: the bench's own (TOKENS, one user each), else minted here.
    const minted = process.env.TOKENS ? readFileSync(process.env.TOKENS, 'utf8').split('\n').filter(Boolean) : [];
    const users = [];
    for (let i = 0; i < SUBSCRIPTIONS; i += 1) users.push({ token: minted[i] ?? (await token(`live-${i}`)) });

    // The writes alone first, to users nobody watches: what a write costs unwatched.
    const unwatched = users.map((user) => ({ token: user.token }));
    let ticks = replicas.map((replica) => cpuTicks(replica.pid));
    const unwatchedWrites = await writeSteadily(unwatched, (i) => replicas[(i + 1) % 2], []);
    const unwatchedCpu =
      replicas.reduce((sum, replica, i) => sum + cpuTicks(replica.pid) - ticks[i], 0) / TICKS_PER_SECOND;

    const before = replicas.map((replica) => rssKib(replica.pid));
    for (let i = 0; i < users.length; i += 1) users[i].subscriber = await subscribe(replicas[i % 2], users[i].token);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const after = replicas.map((replica) => rssKib(replica.pid));
    const perSubscription = (after[0] + after[1] - before[0] - before[1]) / SUBSCRIPTIONS;

    const latencies = [];
    ticks = replicas.map((replica) => cpuTicks(replica.pid));
    const writes = await writeSteadily(users, (i) => replicas[(i + 1) % 2], latencies);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const cpu = replicas.reduce((sum, replica, i) => sum + cpuTicks(replica.pid) - ticks[i], 0) / TICKS_PER_SECOND;
    const missed = users.filter((user) => user.subscriber.waiting).length;
    latencies.sort((a, b) => a - b);
    console.log(
      [
        'live',
        SUBSCRIPTIONS,
        writes,
        RATE,
        percentile(latencies, 50).toFixed(1),
        percentile(latencies, 99).toFixed(1),
        (latencies.at(-1) ?? 0).toFixed(1),
        missed,
        perSubscription.toFixed(1),
        ((cpu * 1e6) / writes).toFixed(0),
        ((unwatchedCpu * 1e6) / unwatchedWrites).toFixed(0),
        failures.length,
      ].join('\t'),
    );
    for (const failure of new Set(failures)) console.error(`a write failed: ${failure}`);
    for (const user of users) user.subscriber.socket.terminate();
  } finally {
    for (const replica of replicas) replica.child.kill('SIGTERM');
    await Promise.all(replicas.map((replica) => new Promise((resolve) => replica.child.once('exit', resolve))));
  }
}

await main();
