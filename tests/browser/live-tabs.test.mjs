// Two tabs of a small checklist page in Debian's Chromium, with every host but
// this machine unreachable. The page, as a frontend team would write it with
// no framework, subscribes to its flow state over the WebSocket (the
// graphql-ws client the server vendors for GraphiQL) and writes over HTTP; a
// click in one tab moves the other within a second. Run: npm ci && node --test
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { freePort, serverBinary } from './binary.mjs';

const run = promisify(execFile);
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SECRET = 'live-tabs-test-secret-0123456789abcdef';
const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost']);

let server;
let pageServer;
let browser;
const consoleErrors = [];
const offHostRequests = [];

function environment(extra) {
  const env = { ...process.env, ...extra };
  for (const name of Object.keys(env)) if (name.startsWith('DATABASE_')) delete env[name];
  return { ...env, JWT_SECRET: SECRET, ...extra };
}

async function token(sub, role) {
  const args = ['token', '--sub', sub, ...(role ? ['--role', role] : [])];
  const { stdout } = await run(serverBinary(), args, { env: environment({}) });
  return stdout.trim();
}

/** The checklist page: the server's address and the user's token come in the query string. */
const PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Checklist</title></head>
<body>
<h1>Getting started</h1>
<p>Step: <strong id="current">…</strong> · revision <span id="revision">…</span></p>
<button id="complete" disabled>Done with this step</button>
<script type="module">
  const params = new URLSearchParams(location.search);
  const api = params.get('api');
  const token = params.get('token');
  await new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = params.get('client');
    script.onload = resolve;
    script.onerror = reject;
    document.head.append(script);
  });
  let state;
  const client = graphqlWs.createClient({
    url: api.replace(/^http/, 'ws') + '/graphql',
    connectionParams: { Authorization: 'Bearer ' + token },
  });
  client.subscribe(
    { query: 'subscription { flowStateChanged(flow: "tour") { currentStep revision } }' },
    {
      next: ({ data }) => {
        // The newest revision wins, whatever order results come in.
        if (state && data.flowStateChanged.revision <= state.revision) return;
        state = data.flowStateChanged;
        document.getElementById('current').textContent = state.currentStep ?? 'all done';
        document.getElementById('revision').textContent = state.revision;
        document.getElementById('complete').disabled = !state.currentStep;
      },
      error: (error) => console.error('subscription failed', JSON.stringify(error)),
      complete: () => {},
    },
  );
  document.getElementById('complete').addEventListener('click', async () => {
    const response = await fetch(api + '/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token },
      body: JSON.stringify({
        query: 'mutation($step: String!) { completeStep(flow: "tour", step: $step) { revision } }',
        variables: { step: state.currentStep },
      }),
    });
    const { errors } = await response.json();
    if (errors) console.error('write failed', JSON.stringify(errors));
  });
</script>
</body>
</html>
`;

before(async () => {
  const port = await freePort();
  const dataDir = await mkdtemp(path.join(tmpdir(), 'onboarding-live-tabs-'));
  const child = spawn(serverBinary(), ['serve', '--dev'], {
    env: environment({ LISTEN_ADDR: `127.0.0.1:${port}`, DATABASE_URL: `sqlite://${dataDir}/onboarding.db` }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  server = { child, dataDir, baseUrl: `http://127.0.0.1:${port}`, output: () => output };
  const deadline = Date.now() + 60_000;
  while (!(await fetch(`${server.baseUrl}/healthz`).then((r) => r.ok, () => false))) {
    assert.ok(Date.now() < deadline && child.exitCode === null, `the server did not start:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const admin = await token('the-admin', 'admin');
  const published = await fetch(`${server.baseUrl}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` },
    body: JSON.stringify({
      query:
        'mutation { publishFlow(input: {key: "tour", title: "Tour", steps: [{key: "welcome", title: "Welcome"}, {key: "profile", title: "Profile"}, {key: "invite", title: "Invite"}]}) { key } }',
    }),
  });
  assert.equal(published.status, 200);

  // The page comes from an origin of its own, as an app's would; --dev allows loopback origins.
  pageServer = createHttpServer((request, response) =>
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE),
  );
  await new Promise((resolve) => pageServer.listen(0, '127.0.0.1', resolve));

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Both tabs stay live, as two windows side by side would: a hidden tab's timers and
    // frames are throttled.
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-renderer-backgrounding', '--disable-background-timer-throttling',
      '--disable-backgrounding-occluded-windows',
    ],
  });
});

after(async () => {
  await browser?.close();
  await new Promise((resolve) => (pageServer ? pageServer.close(resolve) : resolve()));
  if (server) {
    server.child.kill('SIGTERM');
    await new Promise((resolve) => (server.child.exitCode === null ? server.child.once('exit', resolve) : resolve()));
    await rm(server.dataDir, { recursive: true, force: true });
  }
});

test('a click in one tab moves the other within a second', async () => {
  const context = await browser.newContext();
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (LOCAL_HOSTS.has(url.hostname)) return route.continue();
    offHostRequests.push(url.href);
    return route.abort('blockedbyclient');
  });
  const html = await (await fetch(`${server.baseUrl}/graphql`, { headers: { accept: 'text/html' } })).text();
  const client = server.baseUrl + html.match(/src="(\/graphiql\/[^"]+\/graphql-ws\.min\.js)"/)[1];
  const ada = await token('ada');
  const address = `http://127.0.0.1:${pageServer.address().port}/?${new URLSearchParams({
    api: server.baseUrl,
    token: ada,
    client,
  })}`;
  const [first, second] = [await context.newPage(), await context.newPage()];
  for (const page of [first, second]) {
    page.on('console', (message) => message.type() === 'error' && consoleErrors.push(message.text()));
    page.on('pageerror', (error) => consoleErrors.push(`uncaught: ${error.message}`));
    await page.goto(address);
    await page.waitForFunction(() => document.getElementById('current').textContent === 'welcome', null, {
      polling: 20,
    });
  }

  for (const [clicked, other, next] of [
    [first, second, 'profile'],
    [second, first, 'invite'],
  ]) {
    await clicked.locator('#complete').click();
    const started = Date.now();
    await other
      .waitForFunction((step) => document.getElementById('current').textContent === step, next, {
        timeout: 1_000,
        polling: 20,
      })
      .catch((error) => assert.fail(`the other tab stayed: ${error.message}; console: ${consoleErrors.join(' | ')}`));
    assert.ok(Date.now() - started <= 1_000, `the other tab moved after ${Date.now() - started} ms`);
  }
  assert.equal(await first.locator('#revision').textContent(), await second.locator('#revision').textContent());
  await first.screenshot({ path: path.join(tmpdir(), 'live-tabs.png') });
  assert.deepEqual(consoleErrors, [], 'console errors');
  assert.deepEqual(offHostRequests, [], 'requests to another host');
  await context.close();
});
