// Frontend GraphQL clients against the real server: Apollo Client with its
// normalized InMemoryCache, and urql core (a lighter client with a document
// cache, queries over GET), each signing in with a token minted by
// `onboarding token`. Runs on SQLite, and on Postgres too when TEST_DATABASE_URL is set.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ApolloClient, CombinedGraphQLErrors, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { SetContextLink } from '@apollo/client/link/context';
import { Client, cacheExchange, fetchExchange } from '@urql/core';
import { print } from 'graphql';
import { backends, startServer } from './server.mjs';
import { exampleOperation, exampleOperations } from './operations.mjs';

/** A fetch that records every request it sends (method and operation name) and every status it gets. */
function countingFetch() {
  const calls = [];
  const statuses = [];
  return {
    calls,
    statuses,
    fetch: async (input, init = {}) => {
      const method = (init.method ?? 'GET').toUpperCase();
      const url = new URL(input instanceof Request ? input.url : String(input));
      const operationName =
        method === 'POST' ? JSON.parse(init.body).operationName : url.searchParams.get('operationName');
      calls.push({ method, operationName });
      const response = await fetch(input, init);
      statuses.push(response.status);
      return response;
    },
  };
}

const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

/** Publishes `input` with the example PublishFlow operation, as an admin; returns the flow. */
async function publishFlow(server, input) {
  const token = await server.token('flow-publisher', { role: 'admin' });
  const response = await fetch(server.graphqlUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: print(exampleOperation('PublishFlow')), variables: { input } }),
  });
  const { data, errors } = await response.json();
  assert.equal(errors, undefined, JSON.stringify(errors));
  return data.publishFlow;
}

/** `value` without the `__typename` fields urql adds to every selection. */
function withoutTypename(value) {
  if (Array.isArray(value)) return value.map(withoutTypename);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([key]) => key !== '__typename')
      .map(([key, inner]) => [key, key === 'data' ? inner : withoutTypename(inner)]),
  );
}

/** The steps of a flow state as `key:STATUS` strings, for short assertions. */
const stepStatuses = (state) => state.steps.map((step) => `${step.key}:${step.status}`);

for (const backend of backends()) {
  describe(`Apollo Client with InMemoryCache, on ${backend}`, () => {
    let server;
    before(async () => {
      server = await startServer({ backend });
    });
    after(() => server?.stop());

    function apollo(network, token) {
      return new ApolloClient({
        link: new HttpLink({
          uri: server.graphqlUrl,
          fetch: network.fetch,
          headers: token ? { authorization: `Bearer ${token}` } : {},
        }),
        cache: new InMemoryCache(),
      });
    }

    test('completing onboarding updates the cached state through the normalized cache, with no refetch', async () => {
      const token = await server.token('apollo-alice');
      const network = countingFetch();
      const client = apollo(network, token);
      const query = exampleOperation('OnboardingState');

      const { data } = await client.query({ query });
      const before = data.onboardingState;
      assert.equal(before.userId, 'apollo-alice');
      assert.equal(before.isCompleted, false);
      assert.equal(before.currentStep, 0);
      assert.equal(before.completedAt, null);
      assert.equal(before.__typename, 'OnboardingState');
      assert.deepEqual(network.calls, [{ method: 'POST', operationName: 'OnboardingState' }]);

      // The cache keeps the state once, under its typename and id.
      const cacheKey = client.cache.identify(before);
      assert.equal(cacheKey, `OnboardingState:${before.id}`);
      assert.deepEqual(client.cache.extract().ROOT_QUERY.onboardingState, { __ref: cacheKey });

      // A watching component sees the change as soon as the mutation result lands in the cache.
      const seen = [];
      const subscription = client
        .watchQuery({ query, fetchPolicy: 'cache-only' })
        .subscribe({ next: (result) => result.data && seen.push(result.data.onboardingState) });

      // The mutation selects only some fields; Apollo merges them into the entry with the same id.
      const completed = await client.mutate({
        mutation: gql`
          mutation CompleteOnboardingForCache($step: Int!) {
            completeOnboarding(step: $step) { id isCompleted currentStep completedAt }
          }
        `,
        variables: { step: 3 },
      });
      const result = completed.data.completeOnboarding;
      assert.equal(result.id, before.id);
      assert.equal(result.isCompleted, true);
      assert.equal(result.currentStep, 3);
      assert.match(result.completedAt, DATE_TIME);

      const cached = client.readQuery({ query }).onboardingState;
      assert.equal(cached.isCompleted, true);
      assert.equal(cached.currentStep, 3);
      assert.equal(cached.completedAt, result.completedAt);
      assert.equal(cached.createdAt, before.createdAt, 'fields the mutation did not select stay cached');

      // A cache-first read is answered from the cache: the mutation was the only request since the query.
      const again = await client.query({ query });
      assert.deepEqual(again.data.onboardingState, cached);
      assert.deepEqual(network.calls.map((call) => call.operationName), ['OnboardingState', 'CompleteOnboardingForCache']);
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(seen.at(-1)?.isCompleted, true, 'the watching query saw the completed state');
      assert.equal(seen.at(-1)?.currentStep, 3);
      subscription.unsubscribe();

      // And the cache holds what the server holds, character for character.
      const fresh = await client.query({ query, fetchPolicy: 'network-only' });
      assert.equal(fresh.data.onboardingState.completedAt, result.completedAt);
      assert.equal(fresh.data.onboardingState.isCompleted, true);
      assert.equal(fresh.data.onboardingState.currentStep, 3);
      assert.equal(network.calls.length, 3);
    });

    test('completing a flow step updates the cached FlowState through the normalized cache, with no refetch', async () => {
      const flow = await publishFlow(server, {
        key: 'apollo-tour',
        title: 'Welcome tour',
        steps: [
          { key: 'welcome', title: 'Welcome' },
          { key: 'profile', title: 'Your profile' },
        ],
      });
      assert.equal(flow.version, 1);
      const token = await server.token('apollo-dana');
      const network = countingFetch();
      const client = apollo(network, token);
      const query = exampleOperation('FlowState');
      const variables = { flow: 'apollo-tour' };

      const { data } = await client.query({ query, variables });
      const before = data.flowState;
      assert.equal(before.__typename, 'FlowState');
      assert.equal(before.id, 'apollo-dana/apollo-tour');
      assert.equal(before.userId, 'apollo-dana');
      assert.equal(before.flow, 'apollo-tour');
      assert.equal(before.version, 1);
      assert.equal(before.status, 'NOT_STARTED');
      assert.equal(before.currentStep, 'welcome');
      assert.equal(before.currentStepIndex, 0);
      assert.deepEqual(stepStatuses(before), ['welcome:NOT_STARTED', 'profile:NOT_STARTED']);
      assert.deepEqual([before.doneSteps, before.totalSteps], [0, 2]);
      assert.deepEqual(network.calls, [{ method: 'POST', operationName: 'FlowState' }]);

      // The cache keeps the state once, under its typename and `<userId>/<flow>` id.
      const cacheKey = client.cache.identify(before);
      assert.equal(cacheKey, 'FlowState:apollo-dana/apollo-tour');
      assert.deepEqual(client.cache.extract().ROOT_QUERY['flowState({"flow":"apollo-tour"})'], { __ref: cacheKey });

      // A watching component sees the change as soon as the mutation result lands in the cache.
      const seen = [];
      const subscription = client
        .watchQuery({ query, variables, fetchPolicy: 'cache-only' })
        .subscribe({ next: (result) => result.data && seen.push(result.data.flowState) });

      // The example CompleteStep, with the user's answers, based on the revision shown, retry-safe.
      const completed = await client.mutate({
        mutation: exampleOperation('CompleteStep'),
        variables: {
          flow: 'apollo-tour',
          step: 'welcome',
          data: { role: 'developer' },
          expectedRevision: before.revision,
          idempotencyKey: 'apollo-dana-welcome-1',
        },
      });
      const result = completed.data.completeStep;
      assert.equal(result.id, before.id);
      assert.equal(result.status, 'IN_PROGRESS');
      assert.equal(result.currentStep, 'profile');
      assert.ok(result.revision > before.revision, `revision ${result.revision} after ${before.revision}`);

      const entry = client.cache.extract()[cacheKey];
      assert.deepEqual([entry.status, entry.currentStep, entry.revision], ['IN_PROGRESS', 'profile', result.revision]);
      const cached = client.readQuery({ query, variables }).flowState;
      assert.equal(cached.status, 'IN_PROGRESS');
      assert.equal(cached.currentStep, 'profile');
      assert.equal(cached.currentStepIndex, 1);
      assert.equal(cached.revision, result.revision);
      assert.deepEqual(stepStatuses(cached), ['welcome:COMPLETED', 'profile:NOT_STARTED']);
      assert.deepEqual(cached.steps[0].data, { role: 'developer' });
      assert.match(cached.steps[0].completedAt, DATE_TIME);
      assert.match(cached.startedAt, DATE_TIME);
      assert.deepEqual([cached.doneSteps, cached.totalSteps], [1, 2]);
      assert.equal(cached.createdAt, before.createdAt);

      // A mutation that selects only the fields a step changes is merged into the same entry
      // (the steps, which have no id, replace the cached list: each keeps the fields the query reads).
      const last = await client.mutate({
        mutation: gql`
          mutation CompleteStepForCache($flow: String!, $step: String!, $expectedRevision: Int) {
            completeStep(flow: $flow, step: $step, expectedRevision: $expectedRevision) {
              id status currentStep currentStepIndex doneSteps revision completedAt updatedAt
              steps { key title optional status completedAt skippedAt data }
            }
          }
        `,
        variables: { flow: 'apollo-tour', step: 'profile', expectedRevision: cached.revision },
      });
      const done = last.data.completeStep;
      assert.equal(done.status, 'COMPLETED', 'the last required step completes the flow');
      assert.equal(done.currentStep, null);
      assert.match(done.completedAt, DATE_TIME);

      const finished = client.readQuery({ query, variables }).flowState;
      assert.equal(finished.status, 'COMPLETED');
      assert.equal(finished.currentStep, null);
      assert.equal(finished.revision, done.revision);
      assert.equal(finished.completedAt, done.completedAt);
      assert.deepEqual(stepStatuses(finished), ['welcome:COMPLETED', 'profile:COMPLETED']);
      assert.deepEqual([finished.doneSteps, finished.totalSteps], [2, 2]);
      assert.equal(finished.startedAt, cached.startedAt, 'fields the mutation did not select stay cached');
      assert.deepEqual(finished.steps[0].data, { role: 'developer' });

      // A cache-first read is answered from the cache: only the mutations went out since the query.
      const again = await client.query({ query, variables });
      assert.deepEqual(again.data.flowState, finished);
      assert.deepEqual(network.calls.map((call) => call.operationName), ['FlowState', 'CompleteStep', 'CompleteStepForCache']);
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(seen.at(-1)?.status, 'COMPLETED', 'the watching query saw the completed flow');
      assert.equal(seen.at(-1)?.revision, done.revision);
      subscription.unsubscribe();

      // And the cache holds what the server holds, character for character.
      const fresh = await client.query({ query, variables, fetchPolicy: 'network-only' });
      assert.deepEqual(fresh.data.flowState, finished);
      assert.equal(network.calls.length, 4);
    });

    test("the README's link chain, a SetContextLink before the HttpLink, signs each request with a fresh token", async () => {
      let asked = 0;
      const getAccessToken = async () => {
        asked += 1;
        return server.token('apollo-erin');
      };
      const network = countingFetch();
      const auth = new SetContextLink(async ({ headers }) => ({
        headers: { ...headers, Authorization: `Bearer ${await getAccessToken()}` },
      }));
      const client = new ApolloClient({
        link: auth.concat(new HttpLink({ uri: server.graphqlUrl, fetch: network.fetch })),
        cache: new InMemoryCache(),
      });
      const { data } = await client.query({ query: exampleOperation('OnboardingState') });
      assert.equal(data.onboardingState.userId, 'apollo-erin');
      const completed = await client.mutate({ mutation: exampleOperation('CompleteOnboarding'), variables: { step: 2 } });
      assert.equal(completed.data.completeOnboarding.currentStep, 2);
      assert.equal(asked, 2, 'one token per request');
      assert.deepEqual(network.statuses, [200, 200]);
    });

    test("a member's own state and the group's state stay apart in the normalized cache", async () => {
      await publishFlow(server, {
        key: 'apollo-team',
        title: 'Set up the workspace',
        scope: 'GROUP',
        steps: [
          { key: 'billing', title: 'Connect billing' },
          { key: 'invite', title: 'Invite your team', optional: true },
        ],
      });
      await publishFlow(server, { key: 'apollo-own', title: 'Welcome tour', steps: [{ key: 'welcome', title: 'Welcome' }] });
      const ann = apollo(countingFetch(), await server.token('apollo-ann', { group: 'apollo-acme' }));
      const bob = apollo(countingFetch(), await server.token('apollo-bob', { group: 'apollo-acme' }));
      const fields = 'id userId groupId status revision steps { key title optional status }';
      const query = gql(`query TeamOrOwn($flow: String!) { flowState(flow: $flow) { ${fields} } }`);
      const complete = gql(`mutation Complete($flow: String!, $step: String!) { completeStep(flow: $flow, step: $step) { ${fields} } }`);

      const own = (await ann.query({ query, variables: { flow: 'apollo-own' } })).data.flowState;
      const team = (await ann.query({ query, variables: { flow: 'apollo-team' } })).data.flowState;
      assert.equal(own.id, 'apollo-ann/apollo-own');
      assert.equal(own.groupId, null);
      assert.equal(team.groupId, 'apollo-acme');
      assert.equal(team.userId, 'apollo-ann');
      assert.notEqual(ann.cache.identify(own), ann.cache.identify(team));
      assert.deepEqual(
        team.steps.map((step) => [step.key, step.title, step.optional]),
        [['billing', 'Connect billing', false], ['invite', 'Invite your team', true]],
      );

      // Bob's step is the group's: Ann's own state does not move, and Ann's
      // own completion leaves her cached group state as it was.
      const byBob = (await bob.mutate({ mutation: complete, variables: { flow: 'apollo-team', step: 'billing' } })).data.completeStep;
      assert.equal(byBob.id, team.id, 'one group state, one id, whoever asks');
      assert.equal(byBob.revision, 1);
      await ann.mutate({ mutation: complete, variables: { flow: 'apollo-own', step: 'welcome' } });
      assert.equal(ann.cache.readQuery({ query, variables: { flow: 'apollo-own' } }).flowState.status, 'COMPLETED');
      assert.equal(ann.cache.readQuery({ query, variables: { flow: 'apollo-team' } }).flowState.revision, 0);

      const fresh = (await ann.query({ query, variables: { flow: 'apollo-team' }, fetchPolicy: 'network-only' })).data.flowState;
      assert.equal(fresh.revision, 1);
      assert.equal(fresh.status, 'COMPLETED', 'the only required step is done');
      assert.equal(ann.cache.readQuery({ query, variables: { flow: 'apollo-own' } }).flowState.status, 'COMPLETED');
    });

    test('a request without a token gets an UNAUTHENTICATED GraphQL error Apollo Client exposes', async () => {
      const client = apollo(countingFetch(), null);
      await assert.rejects(client.query({ query: exampleOperation('OnboardingState') }), (error) => {
        assert.ok(CombinedGraphQLErrors.is(error), `a GraphQL error, not ${error}`);
        assert.equal(error.errors[0].extensions?.code, 'UNAUTHENTICATED');
        return true;
      });
    });

    test('a token with a bad signature gets an UNAUTHENTICATED GraphQL error Apollo Client exposes', async () => {
      const token = await server.token('apollo-mallory');
      const [header, claims, signature] = token.split('.');
      const forged = `${header}.${claims}.${signature.slice(0, -4)}${signature.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
      const network = countingFetch();
      const client = apollo(network, forged);
      await assert.rejects(client.query({ query: exampleOperation('OnboardingState') }), (error) => {
        assert.ok(CombinedGraphQLErrors.is(error), `a GraphQL error, not ${error}`);
        assert.equal(error.errors[0].extensions?.code, 'UNAUTHENTICATED');
        return true;
      });
      assert.deepEqual(network.statuses, [401]);
    });
  });

  describe(`urql core, on ${backend}`, () => {
    let server;
    before(async () => {
      server = await startServer({ backend });
    });
    after(() => server?.stop());

    function urql(network, token) {
      return new Client({
        url: server.graphqlUrl,
        exchanges: [cacheExchange, fetchExchange],
        fetch: network.fetch,
        fetchOptions: { headers: { authorization: `Bearer ${token}` } },
      });
    }

    test('completing onboarding makes the cached query stale by typename, and the re-read shows the update', async () => {
      const token = await server.token('urql-bob');
      const network = countingFetch();
      const client = urql(network, token);
      const query = exampleOperation('OnboardingState');

      const first = await client.query(query, {}).toPromise();
      assert.equal(first.error, undefined, first.error?.message);
      assert.equal(first.data.onboardingState.userId, 'urql-bob');
      assert.equal(first.data.onboardingState.isCompleted, false);

      // A second cache-first read is served from urql's document cache.
      await client.query(query, {}).toPromise();
      assert.deepEqual(network.calls, [{ method: 'GET', operationName: 'OnboardingState' }], 'queries go over GET');

      const completed = await client.mutation(exampleOperation('CompleteOnboarding'), { step: 2 }).toPromise();
      assert.equal(completed.error, undefined, completed.error?.message);
      const result = completed.data.completeOnboarding;
      assert.equal(result.isCompleted, true);
      assert.equal(result.currentStep, 2);
      assert.match(result.completedAt, DATE_TIME);
      assert.deepEqual(network.calls.at(-1), { method: 'POST', operationName: 'CompleteOnboarding' });

      // The mutation returned an OnboardingState, so urql drops cached results holding one and asks again.
      const second = await client.query(query, {}).toPromise();
      assert.equal(second.error, undefined, second.error?.message);
      assert.deepEqual(second.data.onboardingState, result);
      assert.equal(network.calls.length, 3);
    });

    test('completing a flow step makes the cached FlowState query stale by typename, and the re-read shows the update', async () => {
      await publishFlow(server, {
        key: 'urql-tour',
        title: 'Welcome tour',
        steps: [
          { key: 'welcome', title: 'Welcome' },
          { key: 'profile', title: 'Your profile' },
        ],
      });
      const token = await server.token('urql-dana');
      const network = countingFetch();
      const client = urql(network, token);
      const query = exampleOperation('FlowState');
      const variables = { flow: 'urql-tour' };

      const first = await client.query(query, variables).toPromise();
      assert.equal(first.error, undefined, first.error?.message);
      const before = first.data.flowState;
      assert.equal(before.id, 'urql-dana/urql-tour');
      assert.equal(before.status, 'NOT_STARTED');
      assert.deepEqual(stepStatuses(before), ['welcome:NOT_STARTED', 'profile:NOT_STARTED']);

      // A second cache-first read is served from urql's document cache.
      await client.query(query, variables).toPromise();
      assert.deepEqual(network.calls, [{ method: 'GET', operationName: 'FlowState' }], 'queries go over GET');

      const completed = await client
        .mutation(exampleOperation('CompleteStep'), {
          flow: 'urql-tour',
          step: 'welcome',
          data: { role: 'designer' },
          expectedRevision: before.revision,
        })
        .toPromise();
      assert.equal(completed.error, undefined, completed.error?.message);
      const result = completed.data.completeStep;
      assert.equal(result.status, 'IN_PROGRESS');
      assert.equal(result.currentStep, 'profile');
      assert.ok(result.revision > before.revision);
      assert.deepEqual(stepStatuses(result), ['welcome:COMPLETED', 'profile:NOT_STARTED']);
      assert.deepEqual(result.steps[0].data, { role: 'designer' });
      assert.deepEqual(network.calls.at(-1), { method: 'POST', operationName: 'CompleteStep' });

      // The mutation returned a FlowState, so urql drops cached results holding one and asks again.
      const second = await client.query(query, variables).toPromise();
      assert.equal(second.error, undefined, second.error?.message);
      assert.deepEqual(second.data.flowState, result);
      assert.equal(network.calls.length, 3);
    });

    // The example operations the tests below ran, to check that together they ran them all.
    const ran = new Set();

    /** Runs the example operation `name` with `client` (queries from the network); returns its root field's value. */
    function runner(client) {
      return async (name, variables = {}) => {
        const operation = exampleOperation(name);
        const isQuery = operation.definitions[0].operation === 'query';
        const result = await (isQuery
          ? client.query(operation, variables, { requestPolicy: 'network-only' })
          : client.mutation(operation, variables)
        ).toPromise();
        assert.equal(result.error, undefined, `${name}: ${result.error?.message}`);
        ran.add(name);
        return withoutTypename(Object.values(result.data)[0]);
      };
    }

    /** The GraphQL error an example operation gets: its message and extensions. */
    function refusal(client) {
      return async (name, variables = {}) => {
        const operation = exampleOperation(name);
        const isQuery = operation.definitions[0].operation === 'query';
        const result = await (isQuery
          ? client.query(operation, variables, { requestPolicy: 'network-only' })
          : client.mutation(operation, variables)
        ).toPromise();
        assert.ok(result.error, `${name} with ${JSON.stringify(variables)} succeeded`);
        const [error] = result.error.graphQLErrors;
        return { message: error?.message, ...error?.extensions };
      };
    }

    test('every example operation of the original API runs against the server with the effect the contract gives it', async () => {
      const token = await server.token('urql-carol');
      const client = urql(countingFetch(), token);
      const run = runner(client);

      const created = await run('OnboardingState');
      assert.deepEqual(
        { userId: created.userId, isCompleted: created.isCompleted, currentStep: created.currentStep, completedAt: created.completedAt },
        { userId: 'urql-carol', isCompleted: false, currentStep: 0, completedAt: null },
      );
      assert.match(created.createdAt, DATE_TIME);

      const stepped = await run('SetOnboardingStep', { step: 4 });
      assert.equal(stepped.currentStep, 4);
      assert.equal(stepped.isCompleted, false);
      assert.equal(stepped.completedAt, null);

      const completed = await run('CompleteOnboarding'); // step omitted: 0, as in the Django original
      assert.equal(completed.isCompleted, true);
      assert.equal(completed.currentStep, 0);
      assert.match(completed.completedAt, DATE_TIME);

      const read = await run('OnboardingState');
      assert.deepEqual(read, completed, 'a query reads back exactly what the mutation returned');

      const reset = await run('ResetOnboarding');
      assert.equal(reset.isCompleted, false);
      assert.equal(reset.currentStep, 0);
      assert.equal(reset.completedAt, null);
      assert.equal(reset.id, created.id);
      assert.equal(reset.createdAt, created.createdAt);

      // An admin passes userId to act on someone else's state.
      const admin = urql(countingFetch(), await server.token('urql-admin', { role: 'admin' }));
      const byAdmin = await admin.mutation(exampleOperation('SetOnboardingStep'), { step: 7, userId: 'urql-carol' }).toPromise();
      assert.equal(byAdmin.error, undefined, byAdmin.error?.message);
      assert.equal(byAdmin.data.setOnboardingStep.userId, 'urql-carol');
      assert.equal(byAdmin.data.setOnboardingStep.currentStep, 7);

      // Anyone else who passes another user's id is refused.
      const refused = await client.query(exampleOperation('OnboardingState'), { userId: 'urql-admin' }).toPromise();
      assert.equal(refused.error?.graphQLErrors[0]?.extensions?.code, 'FORBIDDEN');
    });
    test('every flow example operation runs against the server with the effect the contract gives it', async () => {
      const admin = urql(countingFetch(), await server.token('urql-admin', { role: 'admin' }));
      const client = urql(countingFetch(), await server.token('urql-erin'));
      const asAdmin = runner(admin);
      const run = runner(client);
      const refused = refusal(client);
      const flow = 'urql-checklist';
      const input = {
        key: flow,
        title: 'Set up your workspace',
        steps: [
          { key: 'profile', title: 'Fill in your profile' },
          { key: 'invite', title: 'Invite a teammate', optional: true },
          { key: 'connect', title: 'Connect a repository' },
        ],
      };

      // Publishing: admins only; the same declaration again is the same version.
      assert.equal((await refused('PublishFlow', { input })).code, 'FORBIDDEN');
      const published = await asAdmin('PublishFlow', { input });
      assert.deepEqual(
        { key: published.key, title: published.title, version: published.version },
        { key: flow, title: 'Set up your workspace', version: 1 },
      );
      assert.deepEqual(published.steps, [
        { key: 'profile', title: 'Fill in your profile', optional: false },
        { key: 'invite', title: 'Invite a teammate', optional: true },
        { key: 'connect', title: 'Connect a repository', optional: false },
      ]);
      assert.match(published.publishedAt, DATE_TIME);
      assert.deepEqual(await asAdmin('PublishFlow', { input }), published);

      const flows = await run('Flows');
      assert.deepEqual(flows.find((f) => f.key === flow), published);
      const withVersions = await run('Flow', { key: flow });
      assert.deepEqual(withVersions.versions, [
        { version: 1, title: input.title, reonboarding: 'KEEP', publishedAt: published.publishedAt, steps: published.steps },
      ]);
      assert.equal(await run('Flow', { key: 'no-such-flow' }), null);

      // Listing states writes nothing: the flow reads NOT_STARTED until touched.
      const listed = (await run('FlowStates')).find((state) => state.flow === flow);
      assert.equal(listed?.status, 'NOT_STARTED');
      const created = await run('FlowState', { flow });
      assert.equal(created.id, `urql-erin/${flow}`);
      assert.equal(created.userId, 'urql-erin');
      assert.equal(created.status, 'NOT_STARTED');
      assert.equal(created.currentStep, 'profile');
      assert.deepEqual(stepStatuses(created), ['profile:NOT_STARTED', 'invite:NOT_STARTED', 'connect:NOT_STARTED']);
      assert.deepEqual([created.doneSteps, created.totalSteps], [0, 3]);
      assert.equal(created.startedAt, null);
      assert.match(created.createdAt, DATE_TIME);
      assert.match((await refused('FlowState', { flow: 'no-such-flow' })).message, /no-such-flow/);

      const started = await run('StartFlow', { flow, expectedRevision: created.revision });
      assert.equal(started.status, 'IN_PROGRESS');
      assert.equal(started.revision, created.revision + 1);
      assert.match(started.startedAt, DATE_TIME);

      // completeStep with data, a revision and an idempotency key; the retry changes nothing.
      const answers = { flow, step: 'profile', data: { role: 'developer', team: 3 }, expectedRevision: started.revision, idempotencyKey: 'erin-profile-1' };
      const profiled = await run('CompleteStep', answers);
      assert.deepEqual(stepStatuses(profiled), ['profile:COMPLETED', 'invite:NOT_STARTED', 'connect:NOT_STARTED']);
      assert.deepEqual(profiled.steps[0].data, { role: 'developer', team: 3 });
      assert.match(profiled.steps[0].completedAt, DATE_TIME);
      assert.equal(profiled.currentStep, 'invite');
      assert.equal(profiled.currentStepIndex, 1);
      assert.equal(profiled.doneSteps, 1);
      assert.equal(profiled.revision, started.revision + 1);
      assert.deepEqual(await run('CompleteStep', answers), profiled, 'a retry returns the first result');
      const conflict = await refused('CompleteStep', { flow, step: 'connect', expectedRevision: started.revision });
      assert.equal(conflict.code, 'CONFLICT');
      assert.equal(conflict.currentRevision, profiled.revision);
      const unknownStep = await refused('CompleteStep', { flow, step: 'nope' });
      assert.equal(unknownStep.code, 'BAD_USER_INPUT');
      assert.match(unknownStep.message, /connect/, 'the error lists the valid steps');

      const skipped = await run('SkipStep', { flow, step: 'invite' });
      assert.deepEqual(stepStatuses(skipped), ['profile:COMPLETED', 'invite:SKIPPED', 'connect:NOT_STARTED']);
      assert.match(skipped.steps[1].skippedAt, DATE_TIME);
      assert.equal(skipped.steps[1].completedAt, null);
      assert.equal(skipped.currentStep, 'connect');
      assert.equal(skipped.doneSteps, 2);

      const back = await run('GoToStep', { flow, step: 'profile' });
      assert.equal(back.currentStep, 'profile');
      assert.equal(back.currentStepIndex, 0);
      assert.deepEqual(stepStatuses(back), stepStatuses(skipped), 'going to a step changes no step state');

      const until = new Date(Date.now() + 24 * 3600 * 1000).toISOString();
      const snoozed = await run('SnoozeFlow', { flow, until });
      assert.equal(snoozed.status, 'SNOOZED');
      assert.equal(new Date(snoozed.snoozedUntil).getTime(), new Date(until).getTime());
      assert.equal((await refused('SnoozeFlow', { flow, until: '2001-01-01T00:00:00Z' })).code, 'BAD_USER_INPUT');

      const dismissed = await run('DismissFlow', { flow });
      assert.equal(dismissed.status, 'DISMISSED');
      assert.match(dismissed.dismissedAt, DATE_TIME);
      assert.equal(dismissed.snoozedUntil, null);

      const completed = await run('CompleteFlow', { flow });
      assert.equal(completed.status, 'COMPLETED');
      assert.match(completed.completedAt, DATE_TIME);

      const restarted = await run('RestartFlow', { flow });
      assert.equal(restarted.status, 'NOT_STARTED');
      assert.equal(restarted.currentStepIndex, 0);
      assert.deepEqual(stepStatuses(restarted), ['profile:NOT_STARTED', 'invite:NOT_STARTED', 'connect:NOT_STARTED']);
      assert.deepEqual([restarted.startedAt, restarted.completedAt, restarted.dismissedAt], [null, null, null]);
      assert.equal(restarted.id, created.id);
      assert.equal(restarted.createdAt, created.createdAt);
      assert.deepEqual(await run('FlowState', { flow }), restarted, 'a query reads back exactly what the mutation returned');

      // The history, newest first, two events a page; the retry and the refused writes left none.
      const written = ['FLOW_STARTED', 'STEP_COMPLETED', 'STEP_SKIPPED', 'STEP_SET', 'FLOW_SNOOZED', 'FLOW_DISMISSED', 'FLOW_COMPLETED', 'FLOW_RESTARTED'];
      const events = [];
      let after = null;
      for (let page = 0; page < 10; page += 1) {
        const { edges, pageInfo } = await run('FlowEvents', { flow, first: 2, after });
        events.push(...edges.map((edge) => edge.node));
        assert.equal(pageInfo.endCursor, edges.at(-1)?.cursor ?? null);
        if (!pageInfo.hasNextPage) break;
        after = pageInfo.endCursor;
      }
      assert.deepEqual(events.map((event) => event.type), [...written].reverse());
      for (const event of events) {
        assert.deepEqual([event.userId, event.flow, event.version, event.actor], ['urql-erin', flow, 1, 'urql-erin']);
        assert.match(event.at, DATE_TIME);
      }
      const stepCompleted = events.find((event) => event.type === 'STEP_COMPLETED');
      assert.equal(stepCompleted.step, 'profile');
      assert.deepEqual(stepCompleted.data, { role: 'developer', team: 3 });
      const everyFlow = await run('FlowEvents', {});
      assert.deepEqual(everyFlow.edges.map((edge) => edge.node), events, 'without `flow`, every flow (here only the one)');

      // Export and erase: the user reads their data, only an admin erases it.
      const exported = await run('ExportUserData');
      assert.equal(exported.userId, 'urql-erin');
      assert.deepEqual(exported.flowStates.find((state) => state.flow === flow), restarted);
      assert.deepEqual(exported.events, events);
      assert.equal((await refused('DeleteUserData', { userId: 'urql-erin' })).code, 'FORBIDDEN');
      const erased = await asAdmin('DeleteUserData', { userId: 'urql-erin' });
      assert.equal(erased.userId, 'urql-erin');
      assert.equal(erased.flowStates, exported.flowStates.length);
      assert.equal(erased.events, written.length);
      assert.equal(erased.idempotencyKeys, 1);
      assert.deepEqual(await run('ExportUserData'), { userId: 'urql-erin', flowStates: [], events: [] });
      assert.deepEqual(await asAdmin('DeleteUserData', { userId: 'urql-erin' }), {
        userId: 'urql-erin', flowStates: 0, events: 0, idempotencyKeys: 0,
      });
    });

    test('the team flow example operations share a group state between members and erase it', async () => {
      const admin = urql(countingFetch(), await server.token('urql-admin', { role: 'admin' }));
      const asAdmin = runner(admin);
      const fay = urql(countingFetch(), await server.token('urql-fay', { group: 'urql-initech' }));
      const gil = urql(countingFetch(), await server.token('urql-gil', { group: 'urql-initech' }));
      const outsider = urql(countingFetch(), await server.token('urql-hal', { group: 'urql-globex' }));
      const flow = 'urql-workspace';
      const published = await asAdmin('PublishFlow', {
        input: { key: flow, title: 'Set up the workspace', scope: 'GROUP', steps: [{ key: 'billing', title: 'Connect billing' }] },
      });
      assert.equal(published.scope, 'GROUP');

      assert.deepEqual(await runner(fay)('Viewer'), { userId: 'urql-fay', isAdmin: false, groupIds: ['urql-initech'] });
      const byFay = await runner(fay)('CompleteStep', { flow, step: 'billing', idempotencyKey: 'click-1' });
      assert.equal(byFay.groupId, 'urql-initech');
      assert.equal(byFay.userId, 'urql-fay');
      assert.equal(byFay.status, 'COMPLETED');
      assert.deepEqual(byFay.steps.map((step) => [step.key, step.title, step.optional]), [['billing', 'Connect billing', false]]);
      // Gil's key of the same name is his own: his write applies.
      const byGil = await runner(gil)('RestartFlow', { flow, groupId: 'urql-initech', idempotencyKey: 'click-1' });
      assert.equal(byGil.id, byFay.id);
      assert.equal(byGil.revision, 2);
      const conflict = await refusal(gil)('StartFlow', { flow, expectedRevision: 1 });
      assert.equal(conflict.code, 'CONFLICT');
      assert.equal(conflict.currentState.revision, 2);
      assert.equal(conflict.currentState.groupId, 'urql-initech');
      assert.equal((await refusal(outsider)('FlowState', { flow, groupId: 'urql-initech' })).code, 'FORBIDDEN');

      const exported = await runner(gil)('ExportGroupData', { groupId: 'urql-initech' });
      assert.deepEqual(exported.events.map((event) => [event.type, event.userId]), [
        ['FLOW_RESTARTED', 'urql-gil'], ['FLOW_COMPLETED', 'urql-fay'], ['STEP_COMPLETED', 'urql-fay'],
      ]);
      assert.equal((await refusal(gil)('DeleteGroupData', { groupId: 'urql-initech' })).code, 'FORBIDDEN');
      assert.deepEqual(await asAdmin('DeleteGroupData', { groupId: 'urql-initech' }), {
        groupId: 'urql-initech', flowStates: 1, events: 3, idempotencyKeys: 2,
      });
    });

    test('the webhook example operations register, test, list, change and remove an endpoint', async () => {
      const admin = urql(countingFetch(), await server.token('urql-admin', { role: 'admin' }));
      const asAdmin = runner(admin);
      // A public name the server may send to; from this machine it does not resolve.
      const url = 'https://hooks.example.com/onboarding';
      const created = await asAdmin('CreateWebhookEndpoint', {
        input: { url, description: 'CRM', eventTypes: ['flow.completed'] },
      });
      assert.match(created.secret, /^whsec_[A-Za-z0-9+/]+=*$/);
      const { endpoint } = created;
      assert.deepEqual(
        { url: endpoint.url, description: endpoint.description, eventTypes: endpoint.eventTypes, flows: endpoint.flows, enabled: endpoint.enabled },
        { url, description: 'CRM', eventTypes: ['flow.completed'], flows: [], enabled: true },
      );
      assert.ok((await asAdmin('WebhookEndpoints')).some((listed) => listed.id === endpoint.id));

      const tested = await asAdmin('TestWebhookEndpoint', { id: endpoint.id });
      assert.equal(tested.eventType, 'webhook.test');
      assert.equal(tested.attempts.length, 1);
      assert.equal(tested.attempts[0].responseStatus, null, 'no answer from a name that does not resolve');
      assert.equal(typeof tested.attempts[0].error, 'string');
      assert.equal(tested.status, 'PENDING');
      assert.match(tested.nextAttemptAt, DATE_TIME);

      const resent = await asAdmin('ResendWebhookMessage', { id: tested.id });
      assert.equal(resent.id, tested.id, 'the same webhook-id on every attempt');
      assert.equal(resent.attempts.length, 2);
      // Other tests' completions may be among its messages: the test one is there, once.
      const page = await asAdmin('WebhookMessages', { endpointId: endpoint.id, first: 100 });
      assert.equal(page.edges.filter((edge) => edge.node.id === tested.id).length, 1);
      assert.equal(page.pageInfo.hasNextPage, false);

      const disabled = await asAdmin('UpdateWebhookEndpoint', { id: endpoint.id, enabled: false });
      assert.equal(disabled.enabled, false);
      assert.equal(disabled.eventTypes.length, 1, 'a left-out input keeps the filters');
      const rotated = await asAdmin('RotateWebhookSecret', { id: endpoint.id });
      assert.notEqual(rotated.secret, created.secret);
      assert.equal(await asAdmin('DeleteWebhookEndpoint', { id: endpoint.id }), true);
      assert.ok(!(await asAdmin('WebhookEndpoints')).some((listed) => listed.id === endpoint.id));
    });

    test('the tests above ran every operation of examples/operations.graphql', () => {
      const missing = Object.keys(exampleOperations()).filter((name) => !ran.has(name));
      assert.deepEqual(missing, []);
    });
  });
}
