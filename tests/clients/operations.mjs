// The example operations of examples/operations.graphql and the schema of
// schema.graphql, as graphql-js documents, for the tests.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Kind, parse, visit } from 'graphql';
import { REPO_ROOT } from './server.mjs';

export const SCHEMA_PATH = path.join(REPO_ROOT, 'schema.graphql');
export const OPERATIONS_PATH = path.join(REPO_ROOT, 'examples', 'operations.graphql');

export const schemaSource = () => readFileSync(SCHEMA_PATH, 'utf8');
export const operationsSource = () => readFileSync(OPERATIONS_PATH, 'utf8');

/** The names of the fragments `node` spreads, directly or through other fragments. */
function usedFragments(node, fragments, used = new Set()) {
  visit(node, {
    FragmentSpread(spread) {
      const name = spread.name.value;
      if (used.has(name)) return;
      used.add(name);
      const fragment = fragments.get(name);
      if (!fragment) throw new Error(`${OPERATIONS_PATH}: no fragment named ${name}`);
      usedFragments(fragment, fragments, used);
    },
  });
  return used;
}

/**
 * Every operation of examples/operations.graphql as a document of its own, by
 * name, with the fragments it uses and no others (a server refuses a document
 * with an unused fragment).
 */
export function exampleOperations() {
  const document = parse(operationsSource());
  const fragments = new Map(
    document.definitions.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION).map((d) => [d.name.value, d]),
  );
  const operations = {};
  for (const definition of document.definitions) {
    if (definition.kind !== Kind.OPERATION_DEFINITION) continue;
    if (!definition.name) throw new Error(`${OPERATIONS_PATH}: every operation needs a name`);
    const used = usedFragments(definition, fragments);
    const own = [...fragments.values()].filter((fragment) => used.has(fragment.name.value));
    operations[definition.name.value] = { kind: Kind.DOCUMENT, definitions: [definition, ...own] };
  }
  return operations;
}

/** The example operation `name`; throws with a clear message when it is missing. */
export function exampleOperation(name) {
  const operation = exampleOperations()[name];
  if (!operation) throw new Error(`${OPERATIONS_PATH} has no operation named ${name}`);
  return operation;
}
