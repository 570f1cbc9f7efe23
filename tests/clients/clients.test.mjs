// Frontend GraphQL clients against the real server: Apollo Client with its
// normalized InMemoryCache, and urql core (a lighter client with a document
// cache, queries over GET), each signing in with a token minted by
// `onboarding token`. Runs on SQLite, and on Postgres too when TEST_DATABASE_URL is set.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ApolloClient, CombinedGraphQLErrors, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { Client, cacheExchange, fetchExchange } from '@urql/core';
import { backends, startServer } from './server.mjs';
import { exampleOperation } from './operations.mjs';

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

    test('every example operation runs against the server with the effect the contract gives it', async () => {
      const token = await server.token('urql-carol');
      const client = urql(countingFetch(), token);
      const run = async (name, variables = {}) => {
        const operation = exampleOperation(name);
        const isQuery = operation.definitions[0].operation === 'query';
        const result = await (isQuery
          ? client.query(operation, variables, { requestPolicy: 'network-only' })
          : client.mutation(operation, variables)
        ).toPromise();
        assert.equal(result.error, undefined, `${name}: ${result.error?.message}`);
        return Object.values(result.data)[0];
      };

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
  });
}
