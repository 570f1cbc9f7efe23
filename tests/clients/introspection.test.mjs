// Introspection as GraphiQL, code generators and IDE plugins send it: graphql-js's
// getIntrospectionQuery(), without a token. The schema it yields must be the one
// in schema.graphql, descriptions included.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildClientSchema, buildSchema, getIntrospectionQuery, printSchema } from 'graphql';
import { startServer } from './server.mjs';
import { schemaSource } from './operations.mjs';

// What the tools send: the default query (codegen, graphql-config), GraphiQL's
// (input value deprecations), and every option graphql-js offers.
const EVERY_OPTION = {
  descriptions: true,
  specifiedByUrl: true,
  directiveIsRepeatable: true,
  schemaDescription: true,
  inputValueDeprecation: true,
  oneOf: true,
};
const VARIANTS = {
  'the default introspection query': {},
  "GraphiQL's introspection query": { inputValueDeprecation: true },
  'the introspection query with every option but schemaDescription': { ...EVERY_OPTION, schemaDescription: false },
};

// async-graphql 7 answers `__schema { description }` with this fixed text (the
// specification's description of the __Schema type) whatever the schema is:
// a known limitation, listed in README.md. schema.graphql has no schema description.
const ASYNC_GRAPHQL_SCHEMA_DESCRIPTION =
  'A GraphQL Schema defines the capabilities of a GraphQL server. It exposes all available types and directives on the server, as well as the entry points for query, mutation, and subscription operations.';

async function introspect(url, options, accept = 'application/json') {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept },
    body: JSON.stringify({ query: getIntrospectionQuery(options), operationName: 'IntrospectionQuery' }),
  });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  const result = JSON.parse(text);
  assert.equal(result.errors, undefined, JSON.stringify(result.errors));
  return result.data;
}

const ACCEPTS = ['application/json', 'application/graphql-response+json, application/json;q=0.9'];

describe('introspection for tools', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server?.stop());

  const expected = () => printSchema(buildSchema(schemaSource()));

  for (const [variant, options] of Object.entries(VARIANTS)) {
    for (const accept of ACCEPTS) {
      test(`${variant} works without a token (Accept: ${accept}) and yields schema.graphql`, async () => {
        const data = await introspect(server.graphqlUrl, options, accept);
        const served = printSchema(buildClientSchema(data));
        assert.equal(served, expected(), 'the introspected schema differs from schema.graphql');
      });
    }
  }

  test('with schemaDescription too, the schema is schema.graphql but for the fixed schema description of async-graphql', async () => {
    const data = await introspect(server.graphqlUrl, EVERY_OPTION);
    const description = data.__schema.description;
    assert.ok(
      description == null || description === ASYNC_GRAPHQL_SCHEMA_DESCRIPTION,
      `unexpected schema description: ${description}`,
    );
    const withoutIt = { __schema: { ...data.__schema, description: null } };
    assert.equal(printSchema(buildClientSchema(withoutIt)), expected());
  });

  test('the introspection query over GET works without a token and yields schema.graphql', async () => {
    const url = new URL(server.graphqlUrl);
    url.searchParams.set('query', getIntrospectionQuery());
    const response = await fetch(url, { headers: { accept: 'application/graphql-response+json' } });
    const text = await response.text();
    assert.equal(response.status, 200, text);
    const result = JSON.parse(text);
    assert.equal(result.errors, undefined, JSON.stringify(result.errors));
    assert.equal(printSchema(buildClientSchema(result.data)), expected());
  });

  test('schema.graphql keeps its descriptions, so the comparison covers them', () => {
    const schema = buildSchema(schemaSource());
    const state = schema.getType('OnboardingState');
    assert.ok(state.description, 'OnboardingState has a description');
    for (const field of Object.values(state.getFields())) {
      assert.ok(field.description, `OnboardingState.${field.name} has a description`);
    }
    for (const root of [schema.getQueryType(), schema.getMutationType()]) {
      for (const field of Object.values(root.getFields())) {
        assert.ok(field.description, `${root.name}.${field.name} has a description`);
      }
    }
  });
});
