// Drives the self-hosted GraphiQL page of `onboarding serve --dev` in Debian's Chromium,
// with every host but this machine unreachable. Run: npm ci && node --test
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { freePort, serverBinary } from './binary.mjs';

const run = promisify(execFile);
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const TOKEN_LINE = /Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)/;
const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost']);

let server; // { child, baseUrl, token, userId, output(), dataDir }
let browser;
let page;
const offHostRequests = [];
const consoleErrors = [];
const failedResponses = [];

async function startServer() {
  const port = await freePort();
  const dataDir = await mkdtemp(path.join(tmpdir(), 'onboarding-browser-'));
  const env = {
    ...process.env,
    LISTEN_ADDR: `127.0.0.1:${port}`,
    DATABASE_URL: `sqlite://${dataDir}/onboarding.db`,
  };
  for (const name of Object.keys(env)) if (name.startsWith('JWT_')) delete env[name];

  const child = spawn(serverBinary(), ['serve', '--dev'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  let exited = false;
  child.on('exit', () => (exited = true));
  const baseUrl = `http://127.0.0.1:${port}`;
  server = { child, baseUrl, dataDir, output: () => output };

  const deadline = Date.now() + 60_000;
  for (;;) {
    assert.ok(!exited, `the server exited early:\n${output}`);
    assert.ok(Date.now() < deadline, `no health and demo token within 60 s:\n${output}`);
    const healthy = await fetch(`${baseUrl}/healthz`).then((r) => r.status === 200, () => false);
    const token = output.match(TOKEN_LINE)?.[1];
    if (healthy && token) {
      const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
      Object.assign(server, { token, userId: claims.sub });
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function stopServer() {
  if (!server) return;
  const { child, dataDir } = server;
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
  await rm(dataDir, { recursive: true, force: true });
}

/** The text of the CodeMirror editor inside `selector`. */
function editorText(selector) {
  return page.locator(`${selector} .CodeMirror`).first().evaluate((element) => element.CodeMirror.getValue());
}

before(async () => {
  await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Nothing but this machine is reachable: what GraphiQL would fetch elsewhere is refused and noted.
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (LOCAL_HOSTS.has(url.hostname)) return route.continue();
    offHostRequests.push(url.href);
    return route.abort('blockedbyclient');
  });
  // CSP violations also reach the console, but this names the directive and the blocked URL.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || 'inline'}`);
    });
  });
  page = await context.newPage();
  // Cut to a line: a blocked data: font would otherwise fill the screen.
  const note = (text) => consoleErrors.push(text.length > 200 ? `${text.slice(0, 200)}…` : text);
  page.on('console', (message) => message.type() === 'error' && note(message.text()));
  page.on('pageerror', (error) => note(`uncaught: ${error.message}`));
  page.on('response', (response) => {
    if (response.status() >= 400) failedResponses.push(`${response.status()} ${response.url()}`);
  });
});

after(async () => {
  try {
    if (page) {
      const screenshot = path.join(tmpdir(), 'graphiql.png');
      await page.screenshot({ path: screenshot });
      console.log(`screenshot: ${screenshot}`);
    }
    await browser?.close();
  } finally {
    await stopServer();
  }
});

test('a browser asking for /graphql gets the explorer page with a strict CSP that is never caching', async () => {
  const response = await page.goto(`${server.baseUrl}/graphql`);
  assert.equal(response.status(), 200);
  const headers = response.headers();
  assert.match(headers['content-type'], /^text\/html/);
  assert.match(headers['content-security-policy'], /script-src 'self'(;|$)/);
  assert.equal(headers['cache-control'], 'no-store');
});

test('the GraphiQL editor renders with no console error and no request to another host', async () => {
  await page.locator('.graphiql-container').waitFor({ state: 'visible' });
  await page.locator('.graphiql-query-editor .CodeMirror').waitFor({ state: 'visible' });
  // Let the introspection query and late style or font loads settle.
  await page.waitForLoadState('networkidle');
  assert.deepEqual(offHostRequests, [], 'the page tried to reach another host');
  assert.deepEqual(consoleErrors, [], 'console errors or CSP violations');
  assert.deepEqual(failedResponses, [], 'requests that failed');
  const query = await editorText('.graphiql-query-editor');
  assert.match(query, /onboardingState\s*\{/);
  assert.match(query, /flowStates\s*\{/);
});

test('the headers editor is open and holds the demo bearer token', async () => {
  const tool = page.locator('section.graphiql-editor-tool');
  assert.equal(await tool.getAttribute('aria-label'), 'Headers');
  const editor = 'section.graphiql-editor-tool .graphiql-editor:not(.hidden)';
  const headers = JSON.parse(await editorText(editor));
  assert.deepEqual(headers, { Authorization: `Bearer ${server.token}` });
  assert.match(await tool.innerText(), /"Authorization":\s*"Bearer ey/);
});

test('running the demo query shows the demo user\'s onboarding state, and no flow on a fresh database', async () => {
  await page.locator('.graphiql-execute-button').click();
  await page.waitForFunction(
    () => document.querySelector('.result-window .CodeMirror')?.CodeMirror.getValue().includes('"onboardingState"'),
  );
  const result = await editorText('.result-window');
  assert.match(result, /"isCompleted": false/);
  const { data, errors } = JSON.parse(result);
  assert.equal(errors, undefined);
  assert.equal(data.onboardingState.userId, server.userId);
  assert.equal(data.onboardingState.isCompleted, false);
  // No flow is published yet: at most the built-in `onboarding`, which declares no steps.
  const published = data.flowStates.filter((state) => state.flow !== 'onboarding');
  assert.deepEqual(published, [], 'no flow but the built-in one on a fresh database');
  const shown = await page.locator('.result-window').innerText();
  assert.ok(shown.includes(`"userId": "${server.userId}"`), shown);
});

test('once a flow is published as the demo query\'s comment says, running it again shows the flow', async () => {
  // The admin token the comment names: `onboarding token --dev --sub me --role admin`.
  const comment = (await editorText('.graphiql-query-editor')).match(/onboarding token --dev[^\n]*/)?.[0];
  assert.ok(comment, 'the demo query says how to get an admin token');
  const args = comment.split(/\s+/).slice(1);
  const env = { ...process.env };
  for (const name of Object.keys(env)) if (name.startsWith('JWT_')) delete env[name];
  const { stdout } = await run(serverBinary(), args, { env });
  const response = await fetch(`${server.baseUrl}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${stdout.trim()}` },
    body: JSON.stringify({
      query: 'mutation ($input: PublishFlowInput!) { publishFlow(input: $input) { key version } }',
      variables: {
        input: {
          key: 'welcome-tour',
          title: 'Welcome tour',
          steps: [{ key: 'hello', title: 'Say hello' }, { key: 'profile', title: 'Fill in your profile' }],
        },
      },
    }),
  });
  const published = await response.json();
  assert.deepEqual(published, { data: { publishFlow: { key: 'welcome-tour', version: 1 } } });

  await page.locator('.graphiql-execute-button').click();
  await page.waitForFunction(
    () => document.querySelector('.result-window .CodeMirror')?.CodeMirror.getValue().includes('"welcome-tour"'),
  );
  const { data, errors } = JSON.parse(await editorText('.result-window'));
  assert.equal(errors, undefined);
  assert.deepEqual(data.flowStates.find((state) => state.flow === 'welcome-tour'), {
    flow: 'welcome-tour', status: 'NOT_STARTED', currentStep: 'hello', doneSteps: 0, totalSteps: 2,
  });
  assert.deepEqual(consoleErrors, [], 'console errors or CSP violations');
});

test('the docs explorer shows the Query type and its onboardingState field', async () => {
  await page.getByRole('button', { name: 'Show Documentation Explorer' }).click();
  const docs = page.locator('.graphiql-doc-explorer');
  await docs.getByText('Query', { exact: true }).click();
  await docs.locator('.graphiql-doc-explorer-field-name', { hasText: 'onboardingState' }).waitFor();
  assert.match(await docs.innerText(), /onboardingState/);
  assert.deepEqual(consoleErrors, [], 'console errors or CSP violations');
  assert.deepEqual(offHostRequests, [], 'the page tried to reach another host');
});

test('the settings dialog opens without a CSP violation', async () => {
  // Its <style> element is why the CSP keeps style-src 'unsafe-inline'.
  await page.getByRole('button', { name: 'Open settings dialog' }).click();
  await page.getByRole('dialog').waitFor();
  await page.keyboard.press('Escape');
  await page.getByRole('dialog').waitFor({ state: 'detached' });
  assert.deepEqual(consoleErrors, [], 'console errors or CSP violations');
});

test('a subscription runs over the WebSocket: the state, then a change made elsewhere', async () => {
  await page.locator('.graphiql-query-editor .CodeMirror').first().evaluate((element) =>
    element.CodeMirror.setValue(
      'subscription Live { flowStateChanged(flow: "welcome-tour") { flow currentStep revision } }',
    ),
  );
  // The editor reads the operation's name a moment after a change; the tab shows it then.
  await page.locator('.graphiql-tabs').getByText('Live', { exact: true }).waitFor();
  await page.locator('.graphiql-execute-button').click();
  await page.waitForFunction(
    () => document.querySelector('.result-window .CodeMirror')?.CodeMirror.getValue().includes('"flowStateChanged"'),
  );
  assert.match(await editorText('.result-window'), /"currentStep": "hello"/);
  const response = await fetch(`${server.baseUrl}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${server.token}` },
    body: JSON.stringify({ query: 'mutation { completeStep(flow: "welcome-tour", step: "hello") { revision } }' }),
  });
  const { data } = await response.json();
  await page.waitForFunction(
    (revision) =>
      document.querySelector('.result-window .CodeMirror')?.CodeMirror.getValue().includes(`"revision": ${revision}`),
    data.completeStep.revision,
  );
  assert.match(await editorText('.result-window'), /"currentStep": "profile"/);
  // Stop it, as a person would, before leaving.
  await page.locator('.graphiql-execute-button').click();
  assert.deepEqual(consoleErrors, [], 'console errors or CSP violations');
  assert.deepEqual(offHostRequests, [], 'the page tried to reach another host');
});
