// Webhooks as a receiver team sees them: a small node:http receiver that
// verifies every message with the `standardwebhooks` npm package (the Standard
// Webhooks project's own library), answers 400 to anything that does not
// verify, deduplicates by `webhook-id` and records what it accepted. The real
// server (WEBHOOK_ALLOW_PRIVATE=true, so that it may POST to http://127.0.0.1)
// sends to it while the tests drive every kind of flow write, a secret
// rotation and erasures. Runs on SQLite, and on Postgres too when
// TEST_DATABASE_URL is set.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { Webhook } from 'standardwebhooks';
import { backends, startServer } from './server.mjs';

const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const SECRET = /^whsec_([A-Za-z0-9+/]+={0,2})$/;
const SIGNATURE = /^v1,[A-Za-z0-9+/]+={0,2}$/;
const WAIT_MS = 10_000;

/** The message type of each FlowEventType (webhooks.md: one per event type). */
const MESSAGE_TYPE = {
  FLOW_STARTED: 'flow.started',
  STEP_COMPLETED: 'flow.step.completed',
  STEP_SKIPPED: 'flow.step.skipped',
  STEP_SET: 'flow.step.set',
  FLOW_COMPLETED: 'flow.completed',
  FLOW_DISMISSED: 'flow.dismissed',
  FLOW_SNOOZED: 'flow.snoozed',
  FLOW_RESTARTED: 'flow.restarted',
  RESET: 'flow.reset',
  REONBOARDED: 'flow.reonboarded',
};
const FLOW_TYPES = Object.values(MESSAGE_TYPE);

/**
 * The receiver, as a team that takes these messages would write it: the raw
 * body and the headers go to `Webhook#verify`; a message that does not verify
 * gets 400 and is not processed; one that does gets 204, once per webhook-id
 * (a redelivery of an id already processed is acknowledged and skipped).
 */
async function startReceiver(secret) {
  const receiver = {
    secret,
    /** Every verified POST, redeliveries included: { id, headers, raw, body }. */
    deliveries: [],
    /** The messages processed, one per webhook-id. */
    processed: new Map(),
    /** What was refused: { status, error, headers }. */
    rejected: [],
  };
  const http = createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      const raw = Buffer.concat(chunks);
      let body;
      try {
        body = new Webhook(receiver.secret).verify(raw, request.headers);
      } catch (error) {
        receiver.rejected.push({ status: 400, error: error.message, headers: request.headers });
        response.writeHead(400, { 'content-type': 'text/plain' }).end(error.message);
        return;
      }
      const id = request.headers['webhook-id'];
      receiver.deliveries.push({ id, headers: request.headers, raw: raw.toString('utf8'), body });
      if (!receiver.processed.has(id)) receiver.processed.set(id, body);
      response.writeHead(204).end();
    });
  });
  await new Promise((resolve, reject) => {
    http.once('error', reject);
    http.listen(0, '127.0.0.1', resolve);
  });
  receiver.url = `http://127.0.0.1:${http.address().port}/webhooks/onboarding`;
  receiver.close = () =>
    new Promise((resolve) => {
      http.close(resolve);
      http.closeAllConnections(); // the sender's pooled keep-alive connections too
    });
  return receiver;
}

/** Polls `check` (a function returning a truthy value when done) for up to WAIT_MS; returns its value. */
async function waitFor(what, check) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`waited ${WAIT_MS / 1000} s for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** POSTs a message to the receiver as anyone could: { status, text }. */
async function post(url, headers, body) {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  return { status: response.status, text: await response.text() };
}

/** The webhook-* headers of a delivery, as the server sent them. */
const signedHeaders = ({ headers }) => ({
  'webhook-id': headers['webhook-id'],
  'webhook-timestamp': headers['webhook-timestamp'],
  'webhook-signature': headers['webhook-signature'],
});

for (const backend of backends()) {
  describe(`webhooks to a receiver verifying with standardwebhooks, on ${backend}`, () => {
    let server;
    let admin;
    before(async () => {
      server = await startServer({ backend, env: { WEBHOOK_ALLOW_PRIVATE: 'true', SHUTDOWN_DRAIN: '0s' } });
      admin = await server.token('wh-admin', { role: 'admin' });
    });
    after(() => server?.stop());

    /** Runs a GraphQL operation with `token`; returns data, failing on errors. */
    async function graphql(token, query, variables = {}) {
      const response = await fetch(server.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query, variables }),
      });
      const { data, errors } = await response.json();
      assert.equal(errors, undefined, `${query}: ${JSON.stringify(errors)}`);
      return data;
    }

    /** Registers `receiver` with createWebhookEndpoint; gives it the secret. Returns the endpoint. */
    async function register(receiver, input = {}) {
      const { createWebhookEndpoint: created } = await graphql(
        admin,
        `mutation($input: WebhookEndpointInput!) {
           createWebhookEndpoint(input: $input) { endpoint { id url description eventTypes flows enabled } secret }
         }`,
        { input: { url: receiver.url, description: 'receiver team', ...input } },
      );
      const [, encoded] = created.secret.match(SECRET) ?? [];
      assert.ok(encoded, `the secret ${created.secret} is whsec_ and base64`);
      const bytes = Buffer.from(encoded, 'base64').length;
      assert.ok(bytes >= 24 && bytes <= 64, `the secret holds ${bytes} random bytes`);
      assert.equal(created.endpoint.url, receiver.url);
      assert.equal(created.endpoint.enabled, true);
      receiver.secret = created.secret;
      return created.endpoint;
    }

    const deleteEndpoint = (id) =>
      graphql(admin, 'mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }', { id });

    const STATE_FIELDS = 'id userId groupId flow version status currentStep currentStepIndex doneSteps totalSteps completedAt revision';

    test('every flow event type arrives once per webhook-id, verified, with the body webhooks.md gives', async () => {
      const receiver = await startReceiver(null);
      let endpoint;
      try {
        endpoint = await register(receiver);
        const user = 'wh-ann';
        const member = 'wh-bob';
        const group = 'wh-acme';
        const ann = await server.token(user);
        const bob = await server.token(member, { group });
        const started = Date.now();

        await graphql(admin, `mutation {
          publishFlow(input: {key: "wh-tour", title: "Tour", steps: [{key: "a", title: "A"}, {key: "b", title: "B"}]}) { key }
        }`);
        await graphql(admin, `mutation {
          publishFlow(input: {key: "wh-team", title: "Team", scope: GROUP, steps: [{key: "billing", title: "Billing"}]}) { key }
        }`);

        // Each write's answer, by state and revision: what the messages of its events must say.
        const answers = new Map();
        const remember = (state) => answers.set(`${state.id}#${state.revision}`, state);
        const flowWrite = async (token, field, args) => {
          const data = await graphql(token, `mutation { ${field}(${args}) { ${STATE_FIELDS} } }`);
          remember(data[field]);
          return data[field];
        };
        // The original API answers with an OnboardingState: read its flow state (reads write nothing).
        const onboardingWrite = async (field, args) => {
          await graphql(ann, `mutation { ${field}${args ? `(${args})` : ''} { revision } }`);
          remember((await graphql(ann, `{ flowState(flow: "onboarding") { ${STATE_FIELDS} } }`)).flowState);
        };

        const until = new Date(Date.now() + 24 * 3600 * 1000).toISOString();
        await flowWrite(ann, 'startFlow', 'flow: "wh-tour"');
        await flowWrite(ann, 'completeStep', 'flow: "wh-tour", step: "a", data: {role: "developer"}');
        await flowWrite(ann, 'dismissFlow', 'flow: "wh-tour"');
        await flowWrite(ann, 'snoozeFlow', `flow: "wh-tour", until: "${until}"`);
        await flowWrite(ann, 'startFlow', 'flow: "wh-tour"');
        await flowWrite(ann, 'goToStep', 'flow: "wh-tour", step: "a"');
        await flowWrite(ann, 'skipStep', 'flow: "wh-tour", step: "b"');
        await flowWrite(ann, 'restartFlow', 'flow: "wh-tour"');
        await flowWrite(ann, 'completeStep', 'flow: "wh-tour", step: "a"');
        // Support completes the last step for her: the actor is the admin; FLOW_COMPLETED follows.
        const completed = await flowWrite(admin, 'completeStep', `flow: "wh-tour", step: "b", userId: "${user}"`);
        assert.equal(completed.status, 'COMPLETED');
        await onboardingWrite('setOnboardingStep', 'step: 1');
        await onboardingWrite('completeOnboarding', 'step: 3');
        await onboardingWrite('resetOnboarding');
        // Version 2 restarts everyone: her next write stores REONBOARDED, then its own event.
        await graphql(admin, `mutation {
          publishFlow(input: {key: "wh-tour", title: "Tour", reonboarding: RESTART_ALL,
            steps: [{key: "a", title: "A"}, {key: "b", title: "B"}, {key: "c", title: "C"}]}) { version }
        }`);
        const reonboarded = await flowWrite(ann, 'startFlow', 'flow: "wh-tour"');
        assert.equal(reonboarded.version, 2);
        // A team flow: groupId is the group's, userId the member who made the change.
        await flowWrite(bob, 'completeStep', 'flow: "wh-team", step: "billing"');

        // The server's own history: one message per event, no more.
        const eventFields = 'id userId groupId flow version type step actor at';
        const history = [
          ...(await graphql(admin, `{ flowEvents(userId: "${user}", first: 100) { edges { node { ${eventFields} } } } }`))
            .flowEvents.edges,
          ...(await graphql(admin, `{ flowEvents(groupId: "${group}", flow: "wh-team", first: 100) { edges { node { ${eventFields} } } } }`))
            .flowEvents.edges,
        ].map((edge) => edge.node);
        assert.deepEqual(
          new Set(history.map((event) => MESSAGE_TYPE[event.type])),
          new Set(FLOW_TYPES),
          'the writes above made every kind of event',
        );

        await waitFor(`${history.length} messages (have ${receiver.deliveries.length})`, () => receiver.processed.size >= history.length);
        // Anything sent twice would have arrived by now too.
        await new Promise((resolve) => setTimeout(resolve, 300));
        assert.deepEqual(receiver.rejected, [], 'every message verified');
        const ids = receiver.deliveries.map((delivery) => delivery.id);
        assert.equal(new Set(ids).size, ids.length, `each webhook-id arrived once: ${ids}`);
        assert.equal(receiver.deliveries.length, history.length, 'one message per event, and no other');
        assert.deepEqual(
          receiver.deliveries.map((delivery) => delivery.body.data.eventId).sort(),
          history.map((event) => event.id).sort(),
          'the messages are the events, each once',
        );

        for (const { id, headers, raw, body } of receiver.deliveries) {
          const where = `message ${id} (${raw})`;
          // Headers.
          assert.match(id, /^\S+$/, where);
          assert.match(headers['webhook-signature'], SIGNATURE, `${where}: one signature, v1`);
          const sentAt = Number(headers['webhook-timestamp']) * 1000;
          assert.ok(Number.isInteger(sentAt / 1000), `${where}: webhook-timestamp is Unix seconds`);
          assert.ok(sentAt >= Math.floor(started / 1000) * 1000 && sentAt <= Date.now() + 1000, `${where}: sent during the test`);
          assert.equal(headers['content-type'], 'application/json', where);
          assert.match(headers['user-agent'], /^onboarding\/\d+\.\d+\.\d+\b/, `${where}: the user-agent names the service and its version`);
          assert.ok(Buffer.byteLength(raw) <= 20 * 1024, `${where}: at most 20 KiB`);

          // Body: {type, timestamp, data}, data with exactly the contract's fields.
          assert.deepEqual(Object.keys(body), ['type', 'timestamp', 'data'], where);
          const { data } = body;
          assert.deepEqual(
            Object.keys(data).sort(),
            ['actor', 'at', 'eventId', 'flow', 'groupId', 'revision', 'state', 'step', 'userId', 'version'],
            where,
          );
          assert.deepEqual(Object.keys(data.state).sort(), ['completedAt', 'currentStep', 'doneSteps', 'status', 'totalSteps'], where);
          assert.equal(typeof data.eventId, 'string', `${where}: eventId is the event's ID`);

          const event = history.find((candidate) => candidate.id === data.eventId);
          assert.ok(event, `${where}: an event of the history`);
          assert.equal(body.type, MESSAGE_TYPE[event.type], where);
          assert.deepEqual(
            { userId: data.userId, groupId: data.groupId, flow: data.flow, version: data.version, step: data.step, actor: data.actor, at: data.at },
            { userId: event.userId, groupId: event.groupId, flow: event.flow, version: event.version, step: event.step, actor: event.actor, at: event.at },
            where,
          );
          assert.match(data.at, DATE_TIME, where);
          assert.equal(body.timestamp, data.at, `${where}: timestamp is the event's time`);

          // The state after the change: the answer of the write that made the event.
          const stateId = event.groupId ? `group:${event.groupId}/${event.flow}` : `${event.userId}/${event.flow}`;
          const answer = answers.get(`${stateId}#${data.revision}`);
          assert.ok(answer, `${where}: revision ${data.revision} is one a write of ${stateId} answered with`);
          if (event.type === 'REONBOARDED') {
            // Stored with the next write, before its own event, in its transaction: the write's revision.
            assert.equal(data.revision, reonboarded.revision, where);
            assert.equal(data.version, 2, where);
            continue;
          }
          assert.deepEqual(
            data.state,
            {
              status: answer.status,
              // The key of the step the state is on, as the API's FlowState has it.
              currentStep: answer.currentStep,
              doneSteps: answer.doneSteps,
              totalSteps: answer.totalSteps,
              completedAt: answer.completedAt,
            },
            where,
          );
        }

        // Both messages of the write that completed the flow carry its revision.
        const completing = receiver.deliveries
          .map((delivery) => delivery.body)
          .filter((body) => body.data.flow === 'wh-tour' && body.data.revision === completed.revision);
        assert.deepEqual(completing.map((body) => body.type).sort(), ['flow.completed', 'flow.step.completed']);
        assert.ok(completing.every((body) => body.data.actor === 'wh-admin'), 'the admin is the actor');

        // The group's message.
        const team = receiver.deliveries.find((delivery) => delivery.body.data.flow === 'wh-team' && delivery.body.type === 'flow.step.completed');
        assert.deepEqual([team.body.data.userId, team.body.data.groupId], [member, group]);
        // Step data is never sent.
        assert.ok(!receiver.deliveries.some((delivery) => delivery.raw.includes('developer')), 'no step data in any message');

        // The server's record agrees: every message SUCCEEDED at the first attempt, with our 204.
        const { webhookMessages } = await graphql(
          admin,
          `query($id: ID!) { webhookMessages(endpointId: $id, first: 100) {
             edges { node { id eventType status attempts { responseStatus error } } } } }`,
          { id: endpoint.id },
        );
        const listed = webhookMessages.edges.map((edge) => edge.node);
        assert.deepEqual(listed.map((message) => message.id).sort(), [...ids].sort());
        for (const message of listed) {
          assert.equal(message.status, 'SUCCEEDED', JSON.stringify(message));
          assert.deepEqual(message.attempts, [{ responseStatus: 204, error: null }], JSON.stringify(message));
        }

        // testWebhookEndpoint sends a webhook.test message now, which verifies as well.
        const { testWebhookEndpoint: sent } = await graphql(
          admin,
          'mutation($id: ID!) { testWebhookEndpoint(id: $id) { id eventType } }',
          { id: endpoint.id },
        );
        assert.equal(sent.eventType, 'webhook.test');
        const probe = await waitFor('the webhook.test message', () => receiver.processed.get(sent.id));
        assert.equal(probe.type, 'webhook.test');
        assert.deepEqual(receiver.rejected, []);
      } finally {
        if (endpoint) await deleteEndpoint(endpoint.id);
        await receiver.close();
      }
    });

    test('the receiver refuses a tampered body, a forged signature and a replay with an old timestamp', async () => {
      const receiver = await startReceiver(null);
      let endpoint;
      try {
        endpoint = await register(receiver);
        const token = await server.token('wh-carol');
        await graphql(token, 'mutation { completeOnboarding(step: 2) { revision } }');
        const [message] = await waitFor('the flow.completed message', () => receiver.deliveries.length && receiver.deliveries);
        assert.equal(message.body.type, 'flow.completed');
        const headers = signedHeaders(message);

        // The same message again, now: it verifies (within the tolerance), and the receiver skips it by its id.
        const again = await post(receiver.url, headers, message.raw);
        assert.equal(again.status, 204);
        assert.equal(receiver.processed.size, 1, 'a redelivery is processed once');

        // Another user's id in the body, the signature kept.
        const tampered = message.raw.replace('"userId":"wh-carol"', '"userId":"wh-mallory"');
        assert.notEqual(tampered, message.raw);
        assert.deepEqual(await post(receiver.url, headers, tampered), { status: 400, text: 'No matching signature found' });
        // One byte more (JSON that means the same).
        assert.equal((await post(receiver.url, headers, `${message.raw} `)).status, 400);
        // A signature made with another secret.
        const forger = new Webhook(`whsec_${Buffer.alloc(32, 7).toString('base64')}`);
        const forged = forger.sign(headers['webhook-id'], new Date(Number(headers['webhook-timestamp']) * 1000), message.raw);
        assert.equal((await post(receiver.url, { ...headers, 'webhook-signature': forged }, message.raw)).status, 400);
        // Another id with the signature of this one.
        assert.equal((await post(receiver.url, { ...headers, 'webhook-id': 'msg_other' }, message.raw)).status, 400);
        // No signature at all.
        const { 'webhook-signature': _, ...unsigned } = headers;
        assert.deepEqual(await post(receiver.url, unsigned, message.raw), { status: 400, text: 'Missing required headers' });

        // A replay of a message sent ten minutes ago, validly signed for that time: too old.
        const tenMinutesAgo = new Date(Date.now() - 10 * 60 * 1000);
        const old = {
          ...headers,
          'webhook-timestamp': String(Math.floor(tenMinutesAgo.getTime() / 1000)),
          'webhook-signature': new Webhook(receiver.secret).sign(headers['webhook-id'], tenMinutesAgo, message.raw),
        };
        assert.deepEqual(await post(receiver.url, old, message.raw), { status: 400, text: 'Message timestamp too old' });
        // The recorded signature with the timestamp moved back: too old too (and no longer signed).
        assert.equal((await post(receiver.url, { ...headers, 'webhook-timestamp': old['webhook-timestamp'] }, message.raw)).status, 400);

        assert.equal(receiver.rejected.length, 7);
        assert.equal(receiver.processed.size, 1, 'nothing refused was processed');
        assert.deepEqual(
          receiver.deliveries.map((delivery) => delivery.id),
          [message.id, message.id],
          'only the server\'s message and its exact replay verified',
        );
      } finally {
        if (endpoint) await deleteEndpoint(endpoint.id);
        await receiver.close();
      }
    });

    test('after rotateWebhookSecret, messages carry two signatures and verify with the old and the new secret', async () => {
      const receiver = await startReceiver(null);
      let endpoint;
      try {
        endpoint = await register(receiver);
        const oldSecret = receiver.secret;
        const token = await server.token('wh-dave');
        await graphql(token, 'mutation { setOnboardingStep(step: 1) { revision } }');
        const [before] = await waitFor('a message before the rotation', () => receiver.deliveries.length && receiver.deliveries);
        assert.match(before.headers['webhook-signature'], SIGNATURE, 'one signature before the rotation');

        const { rotateWebhookSecret: rotated } = await graphql(
          admin,
          'mutation($id: ID!) { rotateWebhookSecret(id: $id) { endpoint { id } secret } }',
          { id: endpoint.id },
        );
        assert.equal(rotated.endpoint.id, endpoint.id);
        assert.match(rotated.secret, SECRET);
        assert.notEqual(rotated.secret, oldSecret);
        // The receiver team deploys the new secret.
        receiver.secret = rotated.secret;

        await graphql(token, 'mutation { setOnboardingStep(step: 2) { revision } }');
        const next = await waitFor('a message after the rotation', () => receiver.deliveries[1]);
        // The original API's flow `onboarding` declares no steps: no step key.
        assert.equal(next.body.data.state.currentStep, null);
        const signatures = next.headers['webhook-signature'].split(' ');
        assert.equal(signatures.length, 2, `two signatures: ${next.headers['webhook-signature']}`);
        for (const signature of signatures) assert.match(signature, SIGNATURE);

        // A receiver still on the old secret and one on the new both verify it.
        assert.deepEqual(new Webhook(oldSecret).verify(next.raw, next.headers), next.body);
        assert.deepEqual(new Webhook(rotated.secret).verify(next.raw, next.headers), next.body);
        // One signature is the old secret's, the other the new one's.
        const signer = (secret) => signatures.filter((signature) => {
          try {
            new Webhook(secret).verify(next.raw, { ...signedHeaders(next), 'webhook-signature': signature });
            return true;
          } catch {
            return false;
          }
        });
        assert.equal(signer(oldSecret).length, 1);
        assert.equal(signer(rotated.secret).length, 1);
        assert.notDeepEqual(signer(oldSecret), signer(rotated.secret));
        // A secret that is neither does not.
        assert.throws(() => new Webhook(`whsec_${Buffer.alloc(32, 1).toString('base64')}`).verify(next.raw, next.headers), /No matching signature/);
        assert.deepEqual(receiver.rejected, []);
      } finally {
        if (endpoint) await deleteEndpoint(endpoint.id);
        await receiver.close();
      }
    });

    test('deleteUserData sends user.erased and deleteGroupData group.erased, with the id only, whatever the flows filter', async () => {
      await graphql(admin, `mutation {
        publishFlow(input: {key: "wh-other", title: "Other", steps: [{key: "one", title: "One"}]}) { key }
      }`);
      await graphql(admin, `mutation {
        publishFlow(input: {key: "wh-team", title: "Team", scope: GROUP, steps: [{key: "billing", title: "Billing"}]}) { key }
      }`);
      const receiver = await startReceiver(null);
      const filtered = await startReceiver(null);
      const endpoints = [];
      try {
        endpoints.push(await register(receiver));
        // An endpoint for one flow and a few types: erasures ignore its flows.
        const narrow = await register(filtered, { eventTypes: ['user.erased', 'group.erased', 'flow.completed'], flows: ['wh-other'] });
        endpoints.push(narrow);
        assert.deepEqual([narrow.eventTypes, narrow.flows], [['user.erased', 'group.erased', 'flow.completed'], ['wh-other']]);
        const erin = await server.token('wh-erin', { group: 'wh-erased-group' });
        await graphql(erin, 'mutation { completeOnboarding(step: 1) { revision } }');
        await graphql(erin, 'mutation { completeStep(flow: "wh-team", step: "billing") { revision } }');
        await waitFor('the writes\' messages', () => receiver.processed.size >= 3);

        const { deleteUserData } = await graphql(admin, 'mutation { deleteUserData(userId: "wh-erin") { userId } }');
        assert.equal(deleteUserData.userId, 'wh-erin');
        const erased = await waitFor('user.erased', () =>
          receiver.deliveries.find((delivery) => delivery.body.type === 'user.erased'));
        assert.deepEqual(erased.body.data, { userId: 'wh-erin' });
        assert.deepEqual(Object.keys(erased.body), ['type', 'timestamp', 'data']);
        assert.match(erased.body.timestamp, DATE_TIME);
        assert.match(erased.headers['webhook-signature'], SIGNATURE);

        await graphql(admin, 'mutation { deleteGroupData(groupId: "wh-erased-group") { groupId } }');
        const groupErased = await waitFor('group.erased', () =>
          receiver.deliveries.find((delivery) => delivery.body.type === 'group.erased'));
        assert.deepEqual(groupErased.body.data, { groupId: 'wh-erased-group' });

        // The narrow endpoint: both erasures, and none of the writes (not its flow).
        await waitFor('both erasures at the filtered endpoint', () => filtered.deliveries.length >= 2);
        await new Promise((resolve) => setTimeout(resolve, 300));
        assert.deepEqual(
          filtered.deliveries.map((delivery) => [delivery.body.type, delivery.body.data]).sort(),
          [['group.erased', { groupId: 'wh-erased-group' }], ['user.erased', { userId: 'wh-erin' }]],
        );
        assert.deepEqual(receiver.rejected, []);
        assert.deepEqual(filtered.rejected, []);
      } finally {
        for (const endpoint of endpoints) await deleteEndpoint(endpoint.id);
        await receiver.close();
        await filtered.close();
      }
    });
  });
}
