// graphql-codegen configuration for a TypeScript frontend of the onboarding API:
// typed documents for Apollo Client 4 (or urql), with the API's two custom
// scalars mapped. Copy it into your app as `codegen.ts`, with this repository's
// `schema.graphql` and the operations you use from `examples/operations.graphql`
// under `src/`, then:
//
//   npm install -D @graphql-codegen/cli @graphql-codegen/typescript-operations @graphql-codegen/typed-document-node
//   npx graphql-codegen
//
// tests/clients runs this file as it is, in an app laid out that way, and
// compiles the README's Apollo example and a typed usage against its output.
import type { CodegenConfig } from '@graphql-codegen/cli';

const config: CodegenConfig = {
  overwrite: true,
  // Or a running server (introspection needs no token): 'http://127.0.0.1:8080/graphql'.
  schema: 'schema.graphql',
  documents: 'src/**/*.graphql',
  generates: {
    'src/generated/graphql.ts': {
      // typescript-operations 6 writes the enum and input types the operations
      // use itself: with the `typescript` plugin they would be declared twice.
      plugins: ['typescript-operations', 'typed-document-node'],
      config: {
        // A scalar without a mapping is an error, not `any`.
        strictScalars: true,
        scalars: {
          // RFC 3339 in UTC with microseconds: `2025-01-01T10:00:00.000000Z`.
          DateTime: 'string',
          // A JSON object: a step's `data`, an event's `data`.
          JSON: '{ [key: string]: unknown }',
        },
        useTypeImports: true,
      },
    },
  },
};

export default config;
