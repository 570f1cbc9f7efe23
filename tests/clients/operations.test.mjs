// examples/operations.graphql is what code generators and frontends start from:
// it must stay valid against schema.graphql and cover the whole API.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Kind, buildSchema, parse, validate } from 'graphql';
import { OPERATIONS_PATH, operationsSource, schemaSource } from './operations.mjs';

test('the example operations validate against schema.graphql', () => {
  const errors = validate(buildSchema(schemaSource()), parse(operationsSource()));
  assert.deepEqual(
    errors.map((error) => error.toString()),
    [],
    `${OPERATIONS_PATH} has drifted from schema.graphql`,
  );
});

test('every example operation is named, once', () => {
  const operations = parse(operationsSource()).definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);
  const names = operations.map((operation) => operation.name?.value);
  assert.ok(names.every(Boolean), 'every operation has a name');
  assert.equal(new Set(names).size, names.length, `operation names repeat: ${names}`);
});

test('the example operations use every query and every mutation of the schema', () => {
  const schema = buildSchema(schemaSource());
  const used = { query: new Set(), mutation: new Set() };
  for (const definition of parse(operationsSource()).definitions) {
    if (definition.kind !== Kind.OPERATION_DEFINITION || !used[definition.operation]) continue;
    for (const selection of definition.selectionSet.selections) {
      if (selection.kind === Kind.FIELD) used[definition.operation].add(selection.name.value);
    }
  }
  for (const [operation, root] of [
    ['query', schema.getQueryType()],
    ['mutation', schema.getMutationType()],
  ]) {
    const missing = Object.keys(root.getFields()).filter((field) => !used[operation].has(field));
    assert.deepEqual(missing, [], `${OPERATIONS_PATH} has no ${operation} using ${root.name}.${missing.join(', ')}`);
  }
});
