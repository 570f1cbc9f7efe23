// `npm run codegen-check`: the codegen setup the README gives a frontend, run
// as a frontend runs it. It lays out an app in generated/app as README.md's
// "Use it from your frontend" says (examples/codegen.ts as codegen.ts, the
// schema, the example operations under src/, the README's Apollo example as
// the file its first line names), runs @graphql-codegen/cli there with that
// configuration unchanged, then `tsc --noEmit` compiles the app with the
// generated types, and typed-usage.ts with them too. A renamed field, a scalar
// left unmapped or an Apollo API the README uses that no longer exists fails it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const APP = path.join(HERE, 'generated', 'app');
const SECTION = 'Use it from your frontend';
const bin = (name) => path.join(HERE, 'node_modules', '.bin', name);

/** The one ```tsx block of the README's frontend section: [file name, text]. */
function readmeExample(readme) {
  const lines = readme.split('\n');
  const start = lines.findIndex((line) => line === `## ${SECTION}`);
  if (start < 0) throw new Error(`README.md has no "## ${SECTION}" section`);
  const end = lines.findIndex((line, i) => i > start && /^## /.test(line));
  const section = lines.slice(start, end < 0 ? undefined : end);
  const blocks = [];
  for (let i = 0; i < section.length; i++) {
    if (section[i] !== '```tsx') continue;
    const close = section.indexOf('```', i + 1);
    if (close < 0) throw new Error(`README.md: a \`\`\`tsx block in "${SECTION}" is not closed`);
    blocks.push(section.slice(i + 1, close));
    i = close;
  }
  if (blocks.length !== 1) {
    throw new Error(`README.md's "${SECTION}" has ${blocks.length} \`\`\`tsx blocks; this check compiles exactly one`);
  }
  const [block] = blocks;
  const file = /^\/\/ (src\/[\w./-]+\.tsx?)$/.exec(block[0] ?? '')?.[1];
  if (!file) throw new Error(`README.md: the \`\`\`tsx block in "${SECTION}" must start with the file it is, e.g. // src/onboarding.tsx`);
  return [file, block.join('\n') + '\n'];
}

function run(command, args, cwd) {
  console.log(`$ ${path.basename(command)} ${args.join(' ')}   (in ${path.relative(HERE, cwd) || '.'})`);
  const result = spawnSync(command, args, { cwd, stdio: 'inherit' });
  if (result.error) throw new Error(`cannot run ${command}: ${result.error.message}`);
  if (result.status !== 0) process.exit(result.status ?? 1);
}

function layOutApp() {
  const readme = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8');
  if (!readme.includes('(examples/codegen.ts)')) {
    throw new Error('README.md no longer links examples/codegen.ts, the configuration this check runs');
  }
  const [file, example] = readmeExample(readme);
  fs.rmSync(APP, { recursive: true, force: true });
  fs.mkdirSync(path.join(APP, 'src'), { recursive: true });
  fs.copyFileSync(path.join(REPO, 'examples', 'codegen.ts'), path.join(APP, 'codegen.ts'));
  fs.copyFileSync(path.join(REPO, 'schema.graphql'), path.join(APP, 'schema.graphql'));
  fs.copyFileSync(path.join(REPO, 'examples', 'operations.graphql'), path.join(APP, 'src', 'operations.graphql'));
  fs.writeFileSync(path.join(APP, file), example);
  // What the README imports from "your identity provider's SDK".
  fs.writeFileSync(
    path.join(APP, 'src', 'auth.ts'),
    'export async function getAccessToken(): Promise<string> {\n  return "a token";\n}\n',
  );
  console.log(`generated/app: examples/codegen.ts, schema.graphql, src/operations.graphql and README.md's ${file}`);
}

try {
  layOutApp();
} catch (error) {
  console.error(error.message);
  process.exit(1);
}
run(bin('graphql-codegen'), ['--config', 'codegen.ts'], APP);
run(bin('tsc'), ['--noEmit', '-p', 'tsconfig.json'], HERE);
console.log(
  'examples/codegen.ts generates src/generated/graphql.ts from the schema and the example operations; ' +
    "the README's Apollo example and typed-usage.ts compile with it.",
);
