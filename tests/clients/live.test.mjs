// Live updates (design/live.md) with the clients frontends run: the graphql-ws
// client (what Apollo Client's GraphQLWsLink, urql and GraphiQL use) over the
// WebSocket at /graphql, Apollo Client and urql on top of it, and the
// graphql-sse client over /graphql/stream. Every close code of the contract
// is provoked; raw sockets (the `ws` package) send what a well-behaved client
// never would. On Postgres, two server processes share one database: a
// change through one reaches a subscriber of the other, also after its
// listening connection is killed. Runs on SQLite, and on Postgres too when
// TEST_DATABASE_URL is set.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { ApolloClient, HttpLink, InMemoryCache, gql, split } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition } from '@apollo/client/utilities';
import { ApolloProvider, useQuery, useSubscription } from '@apollo/client/react';
import React from 'react';
import TestRenderer from 'react-test-renderer';
import { Client, cacheExchange, fetchExchange, subscriptionExchange } from '@urql/core';
import { createClient as createWsClient } from 'graphql-ws';
import { createClient as createSseClient } from 'graphql-sse';
import WebSocket from 'ws';
import { backends, startServer } from './server.mjs';

const run = promisify(execFile);
const { act } = TestRenderer;
// React's test renderer runs effects inside act() only where this is set.
globalThis.IS_REACT_ACT_ENVIRONMENT = true;
const WAIT_MS = 10_000;
const FLOW_STATE = 'flow status currentStep revision';
const SUBSCRIBE = `subscription($flow: String, $userId: String) { flowStateChanged(flow: $flow, userId: $userId) { ${FLOW_STATE} } }`;

function wsUrl(server) {
  return `${server.baseUrl.replace('http', 'ws')}/graphql`;
}

async function graphql(server, token, query, variables = {}) {
  const response = await fetch(server.graphqlUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  return response.json();
}

async function publishTour(server) {
  const admin = await server.token('the-admin', { role: 'admin' });
  const { errors } = await graphql(
    server,
    admin,
    'mutation { publishFlow(input: {key: "tour", title: "Tour", steps: [{key: "a", title: "A"}, {key: "b", title: "B"}, {key: "c", title: "C"}]}) { key } }',
  );
  assert.equal(errors, undefined, JSON.stringify(errors));
}

async function completeStep(server, token, step) {
  const { data, errors } = await graphql(
    server,
    token,
    'mutation($step: String!) { completeStep(flow: "tour", step: $step) { revision } }',
    { step },
  );
  assert.equal(errors, undefined, JSON.stringify(errors));
  return data.completeStep.revision;
}

/** Resolves once `predicate()` holds, polling; fails after WAIT_MS with `what`. */
async function eventually(predicate, what) {
  const deadline = Date.now() + WAIT_MS;
  while (!predicate()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A graphql-ws client, recording how its socket closed. */
function wsClient(server, connectionParams, options = {}) {
  const closes = [];
  const client = createWsClient({
    url: wsUrl(server),
    webSocketImpl: WebSocket,
    connectionParams,
    retryAttempts: 0,
    lazy: false,
    onNonLazyError: () => {},
    on: { closed: (event) => closes.push({ code: event.code, reason: event.reason }) },
    ...options,
  });
  client.on('error', () => {});
  return { client, closes };
}

/** Subscribes with a graphql-ws client; records every result and how it ended. */
function follow(client, query, variables) {
  const seen = { results: [], errors: [], completed: false };
  seen.unsubscribe = client.subscribe(
    { query, variables },
    {
      next: (result) => seen.results.push(result),
      error: (error) => seen.errors.push(error),
      complete: () => (seen.completed = true),
    },
  );
  return seen;
}

/** A raw socket speaking graphql-transport-ws, for what a client library never sends. */
async function rawSocket(server, protocol = 'graphql-transport-ws') {
  const socket = new WebSocket(wsUrl(server), protocol);
  const raw = { socket, messages: [], closed: null, openedAt: Date.now() };
  socket.on('message', (data) => raw.messages.push(JSON.parse(data.toString())));
  raw.closing = new Promise((resolve) =>
    socket.on('close', (code, reason) => {
      raw.closed = { code, reason: reason.toString(), at: Date.now() };
      resolve(raw.closed);
    }),
  );
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  raw.send = (message) => socket.send(typeof message === 'string' ? message : JSON.stringify(message));
  raw.init = async (token) => {
    raw.send({ type: 'connection_init', payload: { Authorization: `Bearer ${token}` } });
    await eventually(() => raw.messages.some((m) => m.type === 'connection_ack'), 'connection_ack');
  };
  return raw;
}

async function closedWith(raw, code) {
  const closed = await Promise.race([
    raw.closing,
    new Promise((resolve) => setTimeout(() => resolve(null), WAIT_MS + 5_000)),
  ]);
  assert.ok(closed, `the server closes the socket with ${code}`);
  assert.equal(closed.code, code, `closed with ${closed.code} ${closed.reason}`);
  return closed;
}

async function healthy(server) {
  const response = await fetch(`${server.baseUrl}/healthz`);
  assert.equal(response.status, 200, '/healthz keeps answering');
}

for (const backend of backends()) {
  describe(`live updates over graphql-ws, on ${backend}`, () => {
    let server;
    let ada;
    before(async () => {
      // Info from the WebSocket transport: it says when it drops a client.
      server = await startServer({ backend, env: { RUST_LOG: 'warn,onboarding::http::graphql_ws=info' } });
      await publishTour(server);
      ada = await server.token('ada');
    });
    after(() => server?.stop());

    test('a subscription sends the state, then each change; queries and mutations run too', async () => {
      const { client } = wsClient(server, { Authorization: `Bearer ${ada}` });
      try {
        const seen = follow(client, SUBSCRIBE, { flow: 'tour' });
        await eventually(() => seen.results.length === 1, 'the current state');
        assert.deepEqual(seen.results[0].data.flowStateChanged, {
          flow: 'tour',
          status: 'NOT_STARTED',
          currentStep: 'a',
          revision: 0,
        });
        const revision = await completeStep(server, ada, 'a');
        await eventually(
          () => seen.results.at(-1).data.flowStateChanged.revision === revision,
          'the change',
        );
        assert.equal(seen.results.at(-1).data.flowStateChanged.currentStep, 'b');
        // A mutation over the socket, then its state on the subscription.
        const written = await new Promise((resolve, reject) => {
          let result;
          client.subscribe(
            { query: 'mutation { completeStep(flow: "tour", step: "b") { revision } }' },
            { next: (value) => (result = value), error: reject, complete: () => resolve(result) },
          );
        });
        const next = written.data.completeStep.revision;
        await eventually(() => seen.results.at(-1).data.flowStateChanged.revision === next, 'the socket write');
        seen.unsubscribe();
      } finally {
        await client.dispose();
      }
    });

    test("another user's flow is FORBIDDEN and an unknown flow BAD_USER_INPUT, as errors of the operation", async () => {
      const { client, closes } = wsClient(server, { authorization: `Bearer ${ada}` });
      try {
        const forbidden = follow(client, SUBSCRIBE, { flow: 'tour', userId: 'grace' });
        const unknown = follow(client, SUBSCRIBE, { flow: 'no-such-flow' });
        await eventually(() => forbidden.errors.length && unknown.errors.length, 'both refusals');
        assert.equal(forbidden.errors[0][0].extensions.code, 'FORBIDDEN');
        assert.equal(unknown.errors[0][0].extensions.code, 'BAD_USER_INPUT');
        assert.deepEqual(closes, [], 'the connection stays open');
      } finally {
        await client.dispose();
      }
    });

    test('the bare token in {"token": ...} is accepted too', async () => {
      const { client } = wsClient(server, { token: ada });
      try {
        const seen = follow(client, SUBSCRIBE, { flow: 'tour' });
        await eventually(() => seen.results.length === 1, 'the current state');
      } finally {
        await client.dispose();
      }
    });

    test('4403: a bad token, and a missing one', async () => {
      for (const params of [{ Authorization: 'Bearer not-a-token' }, {}]) {
        const { client, closes } = wsClient(server, params);
        follow(client, SUBSCRIBE, { flow: 'tour' });
        await eventually(() => closes.length === 1, 'the close');
        assert.equal(closes[0].code, 4403, JSON.stringify(closes[0]));
        assert.match(closes[0].reason, /Forbidden/);
        await client.dispose();
      }
      await healthy(server);
    });

    test('4400: a malformed message and a binary one', async () => {
      for (const bad of ['{"type": "connection_init"', '{"type": "no-such-type"}', Buffer.from([1, 2, 3])]) {
        const raw = await rawSocket(server);
        raw.socket.send(bad);
        await closedWith(raw, 4400);
      }
      await healthy(server);
    });

    test('4401: subscribe before connection_ack', async () => {
      const raw = await rawSocket(server);
      raw.send({ id: '1', type: 'subscribe', payload: { query: SUBSCRIBE, variables: { flow: 'tour' } } });
      await closedWith(raw, 4401);
    });

    test('4409: a subscription id already in use; 4429: connection_init twice', async () => {
      const raw = await rawSocket(server);
      await raw.init(ada);
      const subscribe = { id: 'same', type: 'subscribe', payload: { query: SUBSCRIBE, variables: { flow: 'tour' } } };
      raw.send(subscribe);
      await eventually(() => raw.messages.some((m) => m.type === 'next'), 'the first state');
      raw.send(subscribe);
      await closedWith(raw, 4409);

      const twice = await rawSocket(server);
      await twice.init(ada);
      twice.send({ type: 'connection_init', payload: { Authorization: `Bearer ${ada}` } });
      await closedWith(twice, 4429);
    });

    test('4429: the 101st subscription on one connection', async () => {
      const { client, closes } = wsClient(server, { Authorization: `Bearer ${ada}` });
      const all = [];
      for (let n = 0; n < 101; n += 1) all.push(follow(client, SUBSCRIBE, { flow: 'tour' }));
      await eventually(() => closes.length === 1, 'the close');
      assert.equal(closes[0].code, 4429, JSON.stringify(closes[0]));
      await client.dispose();
      await healthy(server);
    });

    test('4408: no connection_init 10 s after the socket opened, and not sooner', async () => {
      const raw = await rawSocket(server);
      const closed = await closedWith(raw, 4408);
      assert.ok(closed.at - raw.openedAt >= 9_900, `closed after ${closed.at - raw.openedAt} ms`);
    });

    test('the server pings every 15 s and closes a connection silent for 45 s', async () => {
      const raw = await rawSocket(server);
      await raw.init(ada); // and then answers nothing
      const closed = await Promise.race([raw.closing, new Promise((resolve) => setTimeout(resolve, 70_000))]);
      assert.ok(closed, 'the server closed the silent connection');
      const pings = raw.messages.filter((message) => message.type === 'ping').length;
      assert.ok(pings >= 2, `${pings} pings before the close`);
      const after = closed.at - raw.openedAt;
      assert.ok(after >= 44_000 && after <= 65_000, `closed after ${after} ms`);
      assert.equal(closed.code, 4408, closed.reason);
    });

    test('10,000 connections opening and closing leave the server answering and small', async () => {
      const before = rss(server);
      let opened = 0;
      const open = async () => {
        const raw = await rawSocket(server);
        await raw.init(ada);
        opened += 1;
        raw.socket.terminate();
      };
      for (let batch = 0; batch < 200; batch += 1) {
        await Promise.all(Array.from({ length: 50 }, open));
      }
      assert.equal(opened, 10_000);
      await healthy(server);
      const { client } = wsClient(server, { Authorization: `Bearer ${ada}` });
      const seen = follow(client, SUBSCRIBE, { flow: 'tour' });
      await eventually(() => seen.results.length === 1, 'a subscription afterwards');
      await client.dispose();
      const grown = rss(server) - before;
      assert.ok(grown < 64 * 1024, `the server's RSS grew ${grown} KiB`);
    });

    test('a subscriber that stops reading is dropped, and the server stays small', async () => {
      const raw = await rawSocket(server);
      await raw.init(ada);
      const before = rss(server);
      for (let n = 0; n < 100; n += 1) {
        raw.send({ id: `s${n}`, type: 'subscribe', payload: { query: SUBSCRIBE, variables: { flow: 'tour' } } });
      }
      await eventually(() => raw.messages.filter((m) => m.type === 'next').length === 100, 'the states');
      raw.socket._socket.pause(); // reads nothing more
      // Each write sends 100 states to a socket that takes none.
      const deadline = Date.now() + 90_000;
      let writes = 0;
      while (!server.output().includes('stopped reading') && Date.now() < deadline) {
        await graphql(server, ada, 'mutation { restartFlow(flow: "tour") { revision } }');
        await completeStep(server, ada, 'a');
        writes += 2;
      }
      assert.match(server.output(), /dropped a WebSocket client that stopped reading/, `after ${writes} writes`);
      const grown = rss(server) - before;
      assert.ok(grown < 64 * 1024, `the server's RSS grew ${grown} KiB`);
      raw.socket._socket.resume();
      await raw.closing;
      await healthy(server);
    });

    test('a token that expires while connected closes the connection with 4403 "token expired"', async () => {
      const short = await server.token('ada', { ttl: '1s' });
      const { client, closes } = wsClient(server, { Authorization: `Bearer ${short}` });
      follow(client, SUBSCRIBE, { flow: 'tour' });
      // Tokens verify for 30 s past `exp` (clock skew between issuer and server).
      await new Promise((resolve) => setTimeout(resolve, 31_500));
      await eventually(() => closes.length === 1, 'the close');
      assert.deepEqual(closes[0], { code: 4403, reason: 'token expired' });
      await client.dispose();
    });
  });

  describe(`Apollo Client, urql and graphql-sse subscribed, on ${backend}`, () => {
    let server;
    let ada;
    before(async () => {
      server = await startServer({ backend });
      await publishTour(server);
      ada = await server.token('ada');
    });
    after(() => server?.stop());

    test("Apollo Client's GraphQLWsLink keeps a watched query's cached state current", async () => {
      const { client: wsClientForApollo } = wsClient(server, () => ({ Authorization: `Bearer ${ada}` }));
      const apollo = apolloClient(server, ada, wsClientForApollo);
      try {
        const watched = [];
        const query = gql`query Tour { flowState(flow: "tour") { id ${FLOW_STATE} } }`;
        const watching = apollo.watchQuery({ query }).subscribe(({ data }) => data && watched.push(data.flowState));
        await eventually(() => watched.length >= 1, 'the first read');
        const subscribed = apollo
          .subscribe({ query: gql`subscription { flowStateChanged(flow: "tour") { id ${FLOW_STATE} } }` })
          .subscribe(() => {});
        await new Promise((resolve) => setTimeout(resolve, 300));
        const revision = await completeStep(server, ada, 'a');
        await eventually(() => watched.at(-1).revision === revision, 'the watched query to move');
        assert.equal(watched.at(-1).currentStep, 'b');
        subscribed.unsubscribe();
        watching.unsubscribe();
      } finally {
        apollo.stop();
        await wsClientForApollo.dispose();
      }
    });

    test("urql's subscriptionExchange over graphql-ws receives each state", async () => {
      const { client: socket } = wsClient(server, { Authorization: `Bearer ${ada}` });
      const urql = new Client({
        url: server.graphqlUrl,
        exchanges: [
          cacheExchange,
          fetchExchange,
          subscriptionExchange({
            forwardSubscription: (request) => ({
              subscribe: (sink) => ({ unsubscribe: socket.subscribe({ ...request, query: request.query ?? '' }, sink) }),
            }),
          }),
        ],
        fetchOptions: { headers: { authorization: `Bearer ${ada}` } },
      });
      try {
        const states = [];
        const { unsubscribe } = urql
          .subscription(SUBSCRIBE, { flow: 'tour' })
          .subscribe((result) => result.data && states.push(result.data.flowStateChanged));
        await eventually(() => states.length >= 1, 'the current state');
        const revision = await completeStep(server, ada, 'b');
        await eventually(() => states.at(-1).revision === revision, 'the change');
        unsubscribe();
      } finally {
        await socket.dispose();
      }
    });

    test('the graphql-sse client over /graphql/stream receives each state', async () => {
      const sse = createSseClient({
        url: `${server.baseUrl}/graphql/stream`,
        singleConnection: false,
        headers: () => ({ Authorization: `Bearer ${ada}` }),
        retryAttempts: 0,
      });
      try {
        const seen = follow(sse, SUBSCRIBE, { flow: 'tour' });
        await eventually(() => seen.results.length >= 1, 'the current state');
        const revision = await completeStep(server, ada, 'c');
        await eventually(() => seen.results.at(-1).data.flowStateChanged.revision === revision, 'the change');
        assert.equal(seen.results.at(-1).data.flowStateChanged.status, 'COMPLETED');
        seen.unsubscribe();
      } finally {
        sse.dispose();
      }
    });
  });
}

if (process.env.TEST_DATABASE_URL) {
  describe('two server processes on one Postgres', () => {
    let a;
    let b;
    let ada;
    before(async () => {
      a = await startServer({ backend: 'postgres' });
      b = await startServer({ backend: 'postgres', sharing: a });
      await publishTour(a);
      ada = await a.token('ada');
    });
    after(async () => {
      await b?.stop();
      await a?.stop();
    });

    test('Apollo Client subscribed on A sees a change written through B, also after A loses its listening connection', async () => {
      const { client: socket } = wsClient(a, { Authorization: `Bearer ${ada}` });
      const apollo = apolloClient(a, ada, socket);
      try {
        const states = [];
        const subscribed = apollo
          .subscribe({ query: gql`subscription { flowStateChanged(flow: "tour") { id ${FLOW_STATE} } }` })
          .subscribe(({ data }) => data && states.push(data.flowStateChanged));
        await eventually(() => states.length >= 1, 'the current state');
        let revision = await completeStep(b, ada, 'a');
        await eventually(() => states.at(-1).revision === revision, 'the change through B');

        const before = states.length;
        await run('psql', [
          a.databaseUrl,
          '-qAtc',
          "select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and query ilike 'listen%'",
        ]);
        await eventually(() => states.length > before, 'the current state again');
        assert.equal(states.at(-1).revision, revision);
        revision = await completeStep(b, ada, 'b');
        await eventually(() => states.at(-1).revision === revision, 'a later change through B');
        subscribed.unsubscribe();
      } finally {
        apollo.stop();
        await socket.dispose();
      }
    });

    test("a React component on Apollo's useQuery, urql and graphql-sse, all subscribed on A, follow a write through B", async () => {
      const { client: socket } = wsClient(a, { Authorization: `Bearer ${ada}` });
      const apollo = apolloClient(a, ada, socket);
      const query = gql`query Tour { flowState(flow: "tour") { id ${FLOW_STATE} } }`;
      const subscription = gql`subscription { flowStateChanged(flow: "tour") { id ${FLOW_STATE} } }`;
      // What a checklist component renders: the step, from the cache.
      function Checklist() {
        const { data } = useQuery(query);
        useSubscription(subscription);
        return React.createElement('p', null, data ? `${data.flowState.currentStep}@${data.flowState.revision}` : '…');
      }
      let rendered;
      await act(async () => {
        rendered = TestRenderer.create(React.createElement(ApolloProvider, { client: apollo }, React.createElement(Checklist)));
      });
      const shown = () => rendered.root.findByType('p').props.children;
      const urqlStates = [];
      const urql = new Client({
        url: a.graphqlUrl,
        exchanges: [
          fetchExchange,
          subscriptionExchange({
            forwardSubscription: (request) => ({
              subscribe: (sink) => ({ unsubscribe: socket.subscribe({ ...request, query: request.query ?? '' }, sink) }),
            }),
          }),
        ],
      });
      const urqlSubscription = urql
        .subscription(SUBSCRIBE, { flow: 'tour' })
        .subscribe((result) => result.data && urqlStates.push(result.data.flowStateChanged));
      const sse = createSseClient({
        url: `${a.baseUrl}/graphql/stream`,
        singleConnection: false,
        headers: { Authorization: `Bearer ${ada}` },
        retryAttempts: 0,
      });
      const sseSeen = follow(sse, SUBSCRIBE, { flow: 'tour' });
      try {
        await eventually(() => shown() !== '…' && urqlStates.length && sseSeen.results.length, 'the first states');
        const revision = await completeStep(b, ada, 'c');
        await eventually(() => shown() === `null@${revision}`, `the component to show revision ${revision}`);
        await eventually(() => urqlStates.at(-1).revision === revision, 'urql');
        await eventually(() => sseSeen.results.at(-1).data.flowStateChanged.revision === revision, 'graphql-sse');
      } finally {
        urqlSubscription.unsubscribe();
        sseSeen.unsubscribe();
        sse.dispose();
        await act(async () => rendered.unmount());
        apollo.stop();
        await socket.dispose();
      }
    });
  });
}

function apolloClient(server, token, socket) {
  const http = new HttpLink({ uri: server.graphqlUrl, headers: { authorization: `Bearer ${token}` } });
  const link = split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === 'OperationDefinition' && definition.operation === 'subscription';
    },
    new GraphQLWsLink(socket),
    http,
  );
  return new ApolloClient({ link, cache: new InMemoryCache() });
}

/** The server's resident memory, in KiB. */
function rss(server) {
  const status = readFileSync(`/proc/${server.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}
