// What the browser tests share: the server binary to run and a free port for it.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The server binary: ONBOARDING_BIN, else $CARGO_TARGET_DIR/debug, else the shared build dir. */
export function serverBinary() {
  if (process.env.ONBOARDING_BIN) return process.env.ONBOARDING_BIN;
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [
    process.env.CARGO_TARGET_DIR && path.join(process.env.CARGO_TARGET_DIR, 'debug', 'onboarding'),
    path.join(homedir(), '.cache', 'onboarding-target', 'debug', 'onboarding'),
    path.join(here, '..', '..', 'target', 'debug', 'onboarding'),
  ].filter(Boolean);
  const found = candidates.find((candidate) => existsSync(candidate));
  assert.ok(found, `no server binary in ${candidates.join(', ')}: run \`cargo build\` or set ONBOARDING_BIN`);
  return found;
}

/** A port nothing listens on. */
export async function freePort() {
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}
