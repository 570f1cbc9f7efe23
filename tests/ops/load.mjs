#!/usr/bin/env node
// Load and verdicts for the production drill (tests/ops/drill). Node.js 20's
// own fetch, no dependencies.
//
//   node load.mjs run --url URL --tokens FILE --out DIR [--clients N]
//        [--shared N] [--locked-clients N] [--flow KEY] [--steps N] [--run NAME]
//     sends reads, original-API writes and flow writes through the balancer
//     until SIGTERM, then writes DIR/requests.json (every request: when, what,
//     for whom, how it ended) and DIR/acked.tsv (every acknowledged write).
//   node load.mjs check CASE DIR
//     applies CASE's pass rules to what `run` recorded, the drill's marks
//     (DIR/marks), the database's verdict on the acknowledged writes
//     (DIR/verify) and the drill's own findings (DIR/problems, DIR/notes);
//     writes DIR/result.json and exits 1 when a rule failed.
//   node load.mjs summary RESULT.json...
//     prints the table of every case's result.

import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const READ_STATE = "{ onboardingState { id currentStep isCompleted revision } }";
const READ_FLOW = "query($flow: String!) { flowState(flow: $flow) { id revision status } }";
const COMPLETE =
  "mutation($step: Int!, $key: String, $expected: Int) { completeOnboarding(step: $step, idempotencyKey: $key, expectedRevision: $expected) { id currentStep isCompleted revision } }";
const SET_STEP =
  "mutation($step: Int!, $key: String, $expected: Int) { setOnboardingStep(step: $step, idempotencyKey: $key, expectedRevision: $expected) { id currentStep isCompleted revision } }";
const COMPLETE_STEP =
  "mutation($flow: String!, $step: String!, $key: String, $expected: Int) { completeStep(flow: $flow, step: $step, idempotencyKey: $key, expectedRevision: $expected) { id revision status } }";

// What each operation sends, and the share of the load it gets. The writes
// without a key go to the server's grouped multi-row statements; the keyed
// ones lock the row, as flow writes do.
const OPERATIONS = [
  { name: "read onboardingState", weight: 25, write: false, flow: null },
  { name: "read flowState", weight: 15, write: false, flow: "drill" },
  { name: "completeOnboarding (keyed)", weight: 15, write: true, flow: null, keyed: true },
  { name: "setOnboardingStep (keyed)", weight: 10, write: true, flow: null, keyed: true },
  { name: "completeOnboarding", weight: 5, write: true, flow: null, keyed: false },
  { name: "setOnboardingStep", weight: 10, write: true, flow: null, keyed: false },
  { name: "completeStep (keyed)", weight: 20, write: true, flow: "drill", keyed: true },
];
const LOCKED_OPERATIONS = OPERATIONS.filter((op) => op.flow === null);
const CLASSES = ["single-client", "shared", "locked"];
const REQUEST_TIMEOUT_MS = 35_000;
// A client that met a failure waits a little, as real clients back off, so
// that an outage is not a busy loop that starves the machine.
const BACKOFF_MS = 100;

function options(args) {
  const parsed = {};
  for (let i = 0; i < args.length; i += 2) {
    if (!args[i].startsWith("--")) throw new Error(`unexpected argument ${args[i]}`);
    parsed[args[i].slice(2)] = args[i + 1];
  }
  return parsed;
}

function pick(operations) {
  const total = operations.reduce((sum, op) => sum + op.weight, 0);
  let r = Math.random() * total;
  for (const op of operations) {
    r -= op.weight;
    if (r < 0) return op;
  }
  return operations[operations.length - 1];
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Failure messages are grouped by their text with numbers folded, so that a
// revision or a request id does not make each one a group of its own; an
// HTTP status stays.
function folded(message) {
  const text = message.replace(/\s+/g, " ");
  const status = text.match(/^HTTP \d{3}: (\d{3} )?/)?.[0] ?? "";
  return (status + text.slice(status.length).replace(/\d+/g, "N")).slice(0, 200);
}

async function run(argv) {
  const opts = options(argv);
  const url = opts.url;
  const out = opts.out;
  const tokens = JSON.parse(readFileSync(opts.tokens, "utf8"));
  const clients = Number(opts.clients ?? 16);
  const sharedUsers = Number(opts.shared ?? 4);
  const lockedClients = Number(opts["locked-clients"] ?? 0);
  const flow = opts.flow ?? "drill";
  const flowSteps = Number(opts.steps ?? 12);
  const runId = `${opts.run ?? "load"}-${process.pid}-${Date.now().toString(36)}`;

  const messages = [];
  const messageIndex = new Map();
  const replicas = [];
  const replicaIndex = new Map();
  const requests = [];
  const acked = [];
  // The revision last acknowledged or read, per (single-client user, flow):
  // only its one client writes it, so a later read must see at least this
  // and a write sent with it as expectedRevision must never conflict.
  const known = new Map();
  let sequence = 0;
  let stopping = false;
  process.on("SIGTERM", () => {
    stopping = true;
  });
  process.on("SIGINT", () => {
    stopping = true;
  });

  const messageId = (message) => {
    const key = folded(message);
    if (!messageIndex.has(key)) {
      messageIndex.set(key, messages.length + 1);
      messages.push(key);
    }
    return messageIndex.get(key);
  };
  const replicaId = (name) => {
    if (!name) return -1;
    if (!replicaIndex.has(name)) {
      replicaIndex.set(name, replicas.length);
      replicas.push(name);
    }
    return replicaIndex.get(name);
  };

  async function send(token, query, variables, requestId) {
    const response = await fetch(url, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Authorization: `Bearer ${token}`,
        "x-request-id": requestId,
      },
      body: JSON.stringify({ query, variables }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const text = await response.text();
    const replica = response.headers.get("x-replica");
    if (response.status !== 200) {
      const body = text.replace(/<[^>]*>/g, " ").trim();
      return { failure: `HTTP ${response.status}: ${body}`, replica };
    }
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      return { failure: `HTTP 200 with a body that is not JSON: ${text.slice(0, 100)}`, replica };
    }
    if (body.errors?.length) {
      const error = body.errors[0];
      const code = error.extensions?.code ?? "no code";
      return { failure: `${error.message} (${code})`, replica };
    }
    if (!body.data) return { failure: "HTTP 200 without data or errors", replica };
    return { data: body.data, replica };
  }

  async function client(number, locked) {
    const solo = locked ? "locked" : `solo-${number}`;
    const operations = locked ? LOCKED_OPERATIONS : OPERATIONS;
    while (!stopping) {
      const op = pick(operations);
      const userClass = locked ? 2 : Math.random() < 0.5 ? 0 : 1;
      const user = userClass === 1 ? `shared-${Math.floor(Math.random() * sharedUsers)}` : solo;
      const flowKey = op.flow ?? "onboarding";
      const stateKey = `${user}/${flowKey}`;
      const expected = userClass === 0 ? known.get(stateKey) : undefined;
      const key = op.write && op.keyed ? `${runId}-${number}${locked ? "l" : ""}-${sequence++}` : null;
      const requestId = `${runId}-r${sequence++}`;
      let query;
      let variables;
      switch (op.name) {
        case "read onboardingState":
          query = READ_STATE;
          variables = {};
          break;
        case "read flowState":
          query = READ_FLOW;
          variables = { flow };
          break;
        case "completeOnboarding (keyed)":
        case "completeOnboarding":
          query = COMPLETE;
          variables = { step: 1 + Math.floor(Math.random() * 9), key, expected };
          break;
        case "setOnboardingStep (keyed)":
        case "setOnboardingStep":
          query = SET_STEP;
          variables = { step: Math.floor(Math.random() * 10), key, expected };
          break;
        default:
          query = COMPLETE_STEP;
          variables = {
            flow,
            step: `step-${Math.floor(Math.random() * flowSteps)}`,
            key,
            expected,
          };
      }
      // Without a key, the original API's writes go without
      // expectedRevision too: either one sends a write down the locking
      // path, and these are the ones for the grouped statements.
      if (op.write && !op.keyed) delete variables.expected;
      const started = Date.now();
      let outcome;
      try {
        outcome = await send(tokens[user], query, variables, requestId);
      } catch (error) {
        const cause = error.cause?.code ?? error.cause?.message ?? error.name;
        outcome = { failure: `no answer: ${error.message} (${cause})`, replica: null };
      }
      const ended = Date.now();
      let failure = outcome.failure;
      if (!failure) {
        const state = Object.values(outcome.data)[0];
        const revision = Number(state.revision);
        const before = known.get(stateKey);
        if (userClass === 0 && !op.write && before !== undefined && revision < before) {
          failure = `stale read: revision ${revision} after revision ${before} was acknowledged`;
        }
        if (op.write) {
          acked.push([user, flowKey, key ?? "", requestId, revision]);
        }
        if (userClass === 0 && !failure) known.set(stateKey, Math.max(before ?? 0, revision));
      } else if (op.write && userClass === 0) {
        // A failed write may or may not have been applied: the next read
        // tells.
        known.delete(stateKey);
      }
      requests.push([
        started,
        ended,
        OPERATIONS.indexOf(op),
        userClass,
        failure ? messageId(failure) : 0,
        replicaId(outcome.replica),
      ]);
      if (failure) await sleep(BACKOFF_MS);
    }
  }

  const loops = [];
  for (let i = 0; i < clients; i++) loops.push(client(i, false));
  for (let i = 0; i < lockedClients; i++) loops.push(client(clients + i, true));
  if (opts.seconds) setTimeout(() => (stopping = true), Number(opts.seconds) * 1000);
  await Promise.all(loops);

  writeFileSync(
    join(out, "requests.json"),
    JSON.stringify({
      operations: OPERATIONS.map((op) => op.name),
      classes: CLASSES,
      messages,
      replicas,
      requests,
    }),
  );
  writeFileSync(join(out, "acked.tsv"), acked.map((row) => row.join("\t")).join("\n") + (acked.length ? "\n" : ""));
  const failed = requests.filter((r) => r[4] !== 0).length;
  console.log(`load: ${requests.length} requests, ${failed} failed, ${acked.length} writes acknowledged`);
}

// ---------------------------------------------------------------- verdicts

function readLines(path) {
  return existsSync(path) ? readFileSync(path, "utf8").split("\n").filter((line) => line.trim()) : [];
}

function percentile(values, p) {
  if (!values.length) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const RETRY_SHORTLY = /retry shortly/;
// HAProxy's own answer when no replica is ready: expected while every
// replica's /readyz says the database cannot take writes.
const NO_REPLICA_READY = /^HTTP 503: 503 Service Unavailable No server is available/;
const BUSY = /held what this request needs for too long.*retry shortly/;

function check(caseName, dir) {
  const recorded = JSON.parse(readFileSync(join(dir, "requests.json"), "utf8"));
  const marks = {};
  for (const line of readLines(join(dir, "marks"))) {
    const [at, name] = line.split(/\s+/);
    marks[name] = Number(at);
  }
  const verify = {};
  for (const line of readLines(join(dir, "verify"))) {
    const [name, value] = line.split("=");
    verify[name] = Number(value);
  }
  const problems = readLines(join(dir, "problems"));
  const notes = readLines(join(dir, "notes"));
  const rows = recorded.requests.map(([t0, t1, op, cls, message, replica]) => ({
    t0,
    t1,
    op: recorded.operations[op],
    write: OPERATIONS[op].write,
    cls: recorded.classes[cls],
    failure: message ? recorded.messages[message - 1] : null,
    replica: replica >= 0 ? recorded.replicas[replica] : null,
  }));
  const failures = rows.filter((r) => r.failure);
  const byMessage = (list) => {
    const counts = {};
    for (const r of list) counts[r.failure] = (counts[r.failure] ?? 0) + 1;
    return counts;
  };
  const fail = (text) => problems.push(text);
  const describe = (list) =>
    Object.entries(byMessage(list))
      .map(([message, count]) => `${count}x "${message}"`)
      .join("; ");
  const mark = (name) => {
    if (!(name in marks)) throw new Error(`${caseName}: the drill recorded no mark "${name}"`);
    return marks[name];
  };
  // Requests whose time overlaps [from, to].
  const overlapping = (list, from, to) => list.filter((r) => r.t1 >= from && r.t0 <= to);
  const outside = (list, from, to) => list.filter((r) => r.t1 < from || r.t0 > to);
  const after = (list, at) => list.filter((r) => r.t0 >= at);

  const lostParts = ["missing_keys", "missing_events", "duplicate_revisions", "stale_states"];
  if (!lostParts.every((part) => part in verify)) {
    fail("the acknowledged writes were not checked against the database");
  }
  const lost = lostParts.reduce((sum, part) => sum + (verify[part] ?? 0), 0);
  const acked = verify.acknowledged ?? 0;
  if (lost) {
    fail(
      `acknowledged writes lost: ${lostParts.map((part) => `${part}=${verify[part]}`).join(", ")}`,
    );
  }
  if (!rows.length) fail("no requests were sent");
  if (!acked) fail("no write was acknowledged");

  // Every replica served in the last phase: the restarted ones are back.
  const everyReplicaServes = (at) => {
    const served = new Set(after(rows, at).filter((r) => !r.failure && r.replica).map((r) => r.replica));
    const expected = Number(readLines(join(dir, "replicas"))[0] ?? 3);
    if (served.size < expected) {
      fail(`after ${new Date(at).toISOString()} only ${[...served].sort().join(", ") || "no replica"} served`);
    }
  };
  const noFailuresAfter = (name) => {
    const late = failures.filter((r) => r.t0 >= mark(name));
    if (late.length) fail(`${late.length} failures after "${name}": ${describe(late)}`);
  };
  const onlyRetryShortly = (list, what) => {
    const other = list.filter((r) => !RETRY_SHORTLY.test(r.failure) && !NO_REPLICA_READY.test(r.failure));
    if (other.length) fail(`${other.length} failures ${what} other than "retry shortly": ${describe(other)}`);
    const internal = list.filter((r) => /^Internal server error/.test(r.failure));
    if (internal.length) fail(`${internal.length} "Internal server error" ${what}`);
  };

  switch (caseName) {
    case "cold-start":
    case "contention":
    case "rolling-sigterm":
    case "pgbouncer-session":
    case "pgbouncer-transaction":
    case "newer-schema": {
      const solo = failures.filter((r) => r.cls === "single-client");
      if (solo.length) fail(`${solo.length} failures for single-client users: ${describe(solo)}`);
      if (failures.length) fail(`${failures.length} failures: ${describe(failures)}`);
      break;
    }
    case "locked-row": {
      const from = mark("lock-start");
      const to = mark("lock-end");
      const others = rows.filter((r) => r.cls !== "locked");
      const othersFailed = others.filter((r) => r.failure);
      if (othersFailed.length) fail(`${othersFailed.length} failures of other users: ${describe(othersFailed)}`);
      const before = others.filter((r) => r.write && r.t1 < from).map((r) => r.t1 - r.t0);
      const during = overlapping(others.filter((r) => r.write), from, to).map((r) => r.t1 - r.t0);
      const lockTimeout = Number(readLines(join(dir, "lock-timeout-ms"))[0] ?? 2000);
      notes.push(
        `other users' writes during the lock: ${during.length}, p50 ${percentile(during, 50)} ms, ` +
          `p95 ${percentile(during, 95)} ms, p99 ${percentile(during, 99)} ms, max ${Math.max(0, ...during)} ms, ` +
          `${during.filter((ms) => ms >= lockTimeout / 2).length} over ${lockTimeout / 2} ms ` +
          `(before it: p95 ${percentile(before, 95)} ms)`,
      );
      // Low latency: most writes of other users do not notice the lock.
      const bound = Math.max(500, 3 * percentile(before, 95));
      if (percentile(during, 95) > bound) {
        fail(`other users' writes slowed by the lock: p95 ${percentile(during, 95)} ms > ${bound} ms`);
      }
      if (during.length < 10) fail(`only ${during.length} writes of other users during the lock`);
      const locked = rows.filter((r) => r.cls === "locked");
      const lockedFailed = locked.filter((r) => r.failure);
      const notBusy = lockedFailed.filter((r) => !BUSY.test(r.failure));
      if (notBusy.length) fail(`${notBusy.length} writes to the locked user failed otherwise: ${describe(notBusy)}`);
      const early = lockedFailed.filter((r) => r.t1 - r.t0 < lockTimeout * 0.9);
      if (early.length) fail(`${early.length} writes to the locked user failed before DATABASE_LOCK_TIMEOUT`);
      const stray = lockedFailed.filter((r) => r.t0 > to || r.t1 < from);
      if (stray.length) fail(`${stray.length} writes to the locked user failed outside the lock: ${describe(stray)}`);
      const busy = lockedFailed.filter((r) => BUSY.test(r.failure));
      if (!busy.length) fail("no write to the locked user met the lock: the drill did not hold it");
      const lockedDone = overlapping(locked.filter((r) => r.write && !r.failure), from, to);
      notes.push(
        `locked user: ${busy.length} writes failed with the lock message (after ${percentile(
          busy.map((r) => r.t1 - r.t0),
          50,
        )} ms p50), ${lockedDone.length} succeeded once it was released`,
      );
      break;
    }
    case "sigkill": {
      const kill = mark("kill");
      const inFlight = rows.filter((r) => r.t0 <= kill && r.t1 >= kill);
      const stray = failures.filter((r) => !(r.t0 <= kill && r.t1 >= kill));
      notes.push(
        `${inFlight.length} requests in flight at the kill (all replicas), ${
          failures.length - stray.length
        } of them failed`,
      );
      if (stray.length) fail(`${stray.length} failures not in flight at the kill: ${describe(stray)}`);
      noFailuresAfter("recovered");
      break;
    }
    case "postgres-outage": {
      const from = mark("outage-start");
      const to = mark("recovered");
      const stray = outside(failures, from, to);
      if (stray.length) fail(`${stray.length} failures outside the outage: ${describe(stray)}`);
      onlyRetryShortly(overlapping(failures, from, to), "during the outage");
      noFailuresAfter("recovered");
      break;
    }
    case "standby": {
      const detourFrom = mark("detour-start");
      const detourTo = mark("detour-recovered");
      const promotionFrom = mark("primary-stop");
      const promotionTo = mark("recovered");
      const duringDetour = overlapping(failures, detourFrom, detourTo);
      const duringPromotion = overlapping(failures, promotionFrom, promotionTo);
      // Between the detour and the promotion the rule below applies.
      const stray = failures.filter((r) => r.t1 < detourFrom || r.t0 > promotionTo);
      if (stray.length) fail(`${stray.length} failures outside the detour and the promotion: ${describe(stray)}`);
      onlyRetryShortly(duringDetour, "during the read-only detour");
      onlyRetryShortly(duringPromotion, "during the promotion");
      const detourWrites = overlapping(
        rows.filter((r) => r.write),
        mark("detour-start") + 2000,
        mark("detour-end"),
      );
      const detourWritesOk = detourWrites.filter((r) => !r.failure);
      if (detourWritesOk.length) {
        fail(`${detourWritesOk.length} writes acknowledged while the replicas were on the read-only standby`);
      }
      // Back on the primary, a replica follows at the next request that
      // meets the standby (README, "Failover"): such requests may still
      // fail, with "retry shortly", but only within the connections'
      // lifetime, and then every replica serves writes without failure.
      const detourEnd = mark("detour-end");
      const lifetime = Number(readLines(join(dir, "connection-lifetime-ms"))[0] ?? 60000);
      const detourAfter = failures.filter((r) => r.t0 >= detourTo && r.t1 < promotionFrom);
      onlyRetryShortly(detourAfter, "after the detour");
      const late = detourAfter.filter((r) => r.t1 > detourEnd + lifetime);
      if (late.length) fail(`${late.length} failures more than ${lifetime} ms after the detour ended`);
      const lastFailure = Math.max(detourTo, ...detourAfter.map((r) => r.t1));
      if (detourAfter.length) {
        notes.push(
          `read-only detour: ${detourAfter.length} failures after every replica was ready and UP again, ` +
            `the last ${lastFailure - detourEnd} ms after the switch back (${describe(detourAfter)})`,
        );
      }
      const settled = rows.filter((r) => r.t0 > lastFailure && r.t1 < promotionFrom);
      const writers = new Set(settled.filter((r) => r.write && !r.failure).map((r) => r.replica));
      const settledFor = settled.length ? Math.max(...settled.map((r) => r.t1)) - lastFailure : 0;
      if (settledFor < 2000 || writers.size < Number(readLines(join(dir, "replicas"))[0] ?? 3)) {
        fail(
          `after the detour, writes did not succeed on every replica for 2 s before the promotion ` +
            `(${settledFor} ms without failures, writes acknowledged by ${[...writers].sort().join(", ") || "none"})`,
        );
      }
      notes.push(
        `read-only detour: ${duringDetour.length} failures (${describe(duringDetour) || "none"})`,
        `promotion: ${duringPromotion.length} failures (${describe(duringPromotion) || "none"})`,
      );
      noFailuresAfter("recovered");
      break;
    }
    default:
      throw new Error(`unknown case ${caseName}`);
  }

  // Every case ends with a window in which every replica serves.
  everyReplicaServes(mark("final"));

  const result = {
    case: caseName,
    pass: problems.length === 0,
    requests: rows.length,
    failures: failures.length,
    byMessage: byMessage(failures),
    acked,
    lost,
    notes,
    problems,
  };
  writeFileSync(join(dir, "result.json"), JSON.stringify(result, null, 2));
  console.log(
    `${caseName}: ${result.pass ? "PASS" : "FAIL"}: ${rows.length} requests, ${failures.length} failed, ` +
      `${acked} writes acknowledged, ${lost} lost`,
  );
  for (const [message, count] of Object.entries(result.byMessage)) console.log(`  failed ${count}x: ${message}`);
  for (const note of notes) console.log(`  ${note}`);
  for (const problem of problems) console.log(`  RULE FAILED: ${problem}`);
  return result.pass;
}

function summary(files) {
  const results = files.map((file) => JSON.parse(readFileSync(file, "utf8")));
  const width = Math.max(4, ...results.map((r) => r.case.length));
  const line = (cells) =>
    cells.map((cell, i) => (i === 0 ? String(cell).padEnd(width) : String(cell).padStart(9))).join("  ");
  console.log(line(["case", "result", "requests", "failed", "acked", "lost"]));
  for (const r of results) {
    console.log(line([r.case, r.pass ? "PASS" : "FAIL", r.requests, r.failures, r.acked, r.lost]));
  }
  for (const r of results) {
    for (const [message, count] of Object.entries(r.byMessage)) console.log(`${r.case}: failed ${count}x: ${message}`);
  }
  for (const r of results.filter((r) => !r.pass)) {
    for (const problem of r.problems) console.log(`${r.case}: RULE FAILED: ${problem}`);
  }
}

const [command, ...rest] = process.argv.slice(2);
if (command === "run") {
  await run(rest);
} else if (command === "check") {
  process.exitCode = check(rest[0], rest[1]) ? 0 : 1;
} else if (command === "summary") {
  summary(rest);
} else {
  console.error("usage: load.mjs run|check|summary ...");
  process.exitCode = 2;
}
