// Smoke test: the published JavaScript client `@agent-webkit/core` 0.2.0 against a running
// agent-webkit server with the replay agent (`--agent replay`).
//
//   AGENT_WEBKIT_URL=http://127.0.0.1:8000 AGENT_WEBKIT_TOKEN=dev-token node --test smoke.mjs
//
// Optional: AGENT_WEBKIT_FRAMEWORK (only printed), AGENT_WEBKIT_SMOKE_TIMEOUT_MS (every single
// wait, default 10000). `cargo test -p agent-webkit-server --test js_client` runs this file
// against both adapters (axum, actix); see crates/agent-webkit-server/tests/js_client.rs.
//
// Only the client's public API is used. The forced disconnect goes through the client's own
// `fetchImpl` option: a wrapper around the global fetch that can abort one stream connection
// (the socket is torn down; the session's own AbortSignal stays untouched, so the client sees a
// transient network error and reconnects by itself with `Last-Event-ID`).

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createAgentClient, Transport, TransportError } from "@agent-webkit/core";

const BASE_URL = process.env.AGENT_WEBKIT_URL;
const TOKEN = process.env.AGENT_WEBKIT_TOKEN || undefined;
const FRAMEWORK = process.env.AGENT_WEBKIT_FRAMEWORK || "unknown";
const WAIT_MS = Number(process.env.AGENT_WEBKIT_SMOKE_TIMEOUT_MS || 10_000);
const TEST_MS = 60_000;

if (!BASE_URL) {
  throw new Error("AGENT_WEBKIT_URL is not set (e.g. http://127.0.0.1:8000)");
}
console.log(
  `@agent-webkit/core 0.2.0 smoke against ${BASE_URL} (framework: ${FRAMEWORK}, ` +
    `auth: ${TOKEN ? "bearer token" : "none"})`,
);

// ---------------------------------------------------------------------------------------------
// Helpers

/** Every session any test opened; detached at the end so no stream keeps node alive. */
const opened = new Set();
after(() => {
  for (const session of opened) session.detach();
});

/** `promise`, or a rejection naming `what` after `ms`. */
function within(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A promise plus its resolve function. */
function deferred() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Pulls events from `session.events()` one at a time, each pull bounded; keeps them all. */
class EventReader {
  constructor(session, label) {
    opened.add(session);
    this.session = session;
    this.label = label;
    this.iterator = session.events()[Symbol.asyncIterator]();
    this.seen = [];
  }

  /** The next event; fails if the stream ends or nothing arrives in time. */
  async next(expected) {
    const what = `${this.label}: event ${expected ?? "(any)"} after ${this.describe()}`;
    const { value, done } = await within(this.iterator.next(), what);
    assert.ok(!done, `${what}: the stream ended`);
    this.seen.push(value);
    if (expected !== undefined) {
      assert.equal(value.event, expected, `${what}: got ${JSON.stringify(value)}`);
    }
    return value;
  }

  /** Asserts the iterator is finished (the client stops after `done` / on detach). */
  async end() {
    const what = `${this.label}: end of stream after ${this.describe()}`;
    const { value, done } = await within(this.iterator.next(), what);
    assert.ok(done, `${what}: got another event ${JSON.stringify(value)}`);
  }

  describe() {
    return `[${this.seen.map((e) => `${e.id}:${e.event}`).join(", ")}]`;
  }
}

/** Asserts ids are exactly first, first+1, ... (dense, no duplicates, nothing missing). */
function assertDense(events, first, label) {
  const ids = events.map((e) => e.id);
  const want = ids.map((_, i) => first + i);
  assert.deepEqual(ids, want, `${label}: seqs not dense from ${first}: ${JSON.stringify(ids)}`);
}

/**
 * A `fetchImpl` for the client that records every request (method, path, headers, status) and
 * can drop a stream connection and hold the client's next stream connection until released.
 */
function instrumentedFetch() {
  const requests = [];
  const streams = []; // { request, abort }
  let hold = null; // { reached: deferred, release: deferred }
  const impl = async (url, init = {}) => {
    const request = {
      method: init.method ?? "GET",
      path: new URL(url).pathname,
      headers: Object.fromEntries(
        Object.entries(init.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]),
      ),
      status: undefined,
    };
    requests.push(request);
    if (request.method !== "GET" || !request.path.endsWith("/stream")) {
      const response = await fetch(url, init);
      request.status = response.status;
      return response;
    }
    if (hold) {
      const gate = hold;
      hold = null;
      gate.reached.resolve(request);
      await gate.release.promise;
    }
    // Our own controller per connection, chained to the client's signal.
    const controller = new AbortController();
    const outer = init.signal;
    if (outer?.aborted) controller.abort(outer.reason);
    outer?.addEventListener("abort", () => controller.abort(outer.reason), { once: true });
    const response = await fetch(url, { ...init, signal: controller.signal });
    request.status = response.status;
    streams.push({
      request,
      abort: () => controller.abort(new Error("smoke test: forced disconnect")),
    });
    return response;
  };
  return {
    impl,
    requests,
    streamRequests: () => requests.filter((r) => r.method === "GET"),
    /** Kills the newest stream connection (the socket goes away mid-response). */
    dropStream() {
      const live = streams.at(-1);
      assert.ok(live, "no stream connection to drop");
      live.abort();
    },
    /** Makes the next stream connection wait; `reached` resolves with its request. */
    holdNextStream() {
      hold = { reached: deferred(), release: deferred() };
      return { reached: hold.reached.promise, release: hold.release.resolve };
    },
  };
}

function client(extra = {}) {
  return createAgentClient({ baseUrl: BASE_URL, token: TOKEN, ...extra });
}

/** DELETE /sessions/{id} through the client's own transport (throws on a non-2xx, non-404). */
function deleteSession(id) {
  return within(
    new Transport({ baseUrl: BASE_URL, token: TOKEN }).delete(`/sessions/${encodeURIComponent(id)}`),
    `DELETE /sessions/${id}`,
  );
}

// ---------------------------------------------------------------------------------------------
// Tests

test("read_allow: permission round trip, forced disconnect, resume with Last-Event-ID", { timeout: TEST_MS }, async (t) => {
  t.diagnostic(`server ${BASE_URL} (framework: ${FRAMEWORK})`);
  const net = instrumentedFetch();
  const session = await within(
    client({ fetchImpl: net.impl }).createSession({ model: "read_allow" }),
    "POST /sessions",
  );
  assert.match(session.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(session.protocolVersion, "1.0");

  const events = new EventReader(session, "read_allow");
  const ready = await events.next("session_ready");
  assert.equal(ready.id, 1);
  assert.deepEqual(ready.data, { session_id: session.id, protocol_version: "1.0" });

  await within(session.send("Read README.md and tell me its first line."), "send");
  const first = await events.next("message_complete");
  assert.equal(first.data.message_id, "m_1");
  const toolUse = await events.next("tool_use");
  assert.equal(toolUse.data.tool_use_id, "tu_1");
  assert.equal(toolUse.data.tool_name, "Read");
  const prompt = await events.next("permission_request");
  assert.equal(prompt.data.correlation_id, "tu_1");
  assert.equal(prompt.data.tool_name, "Read");
  assert.deepEqual(prompt.data.input, { path: "./README.md" });
  assert.equal(session.lastEventId, String(prompt.id));

  // Drop the connection while the prompt is pending; hold the client's reconnect until
  // everything the approval produces is in the server's log, so those events are truly missed.
  const held = net.holdNextStream();
  net.dropStream();
  const pending = events.next("tool_result"); // the client is now reconnecting by itself
  const reconnect = await within(held.reached, "the client's own reconnect attempt");
  await within(session.approve(prompt.data.correlation_id), "approve");

  // An independent subscriber proves the rest of the turn happened while we were away.
  const observer = new EventReader(
    client().attachSession(session.id, { resumeFromEventId: String(prompt.id) }),
    "observer",
  );
  for (const name of ["tool_result", "message_complete", "result"]) await observer.next(name);
  observer.session.detach();
  await observer.end();
  assertDense(observer.seen, prompt.id + 1, "observer");

  held.release();
  const toolResult = await pending;
  assert.deepEqual(toolResult.data, { tool_use_id: "tu_1", output: "first line", is_error: false });
  const second = await events.next("message_complete");
  assert.equal(second.data.message_id, "m_2");
  assert.deepEqual(second.data.message.content, [{ type: "text", text: "First line: first line" }]);
  const result = await events.next("result");
  assert.equal(result.data.subtype, "success");
  assert.equal(result.data.total_cost_usd, 0.002);
  // Exactly what was missed: the same events, seqs and payloads the observer saw.
  assert.deepEqual(events.seen.slice(-3), observer.seen);

  // The reconnect carried the cursor and the token.
  assert.equal(reconnect.headers["last-event-id"], String(prompt.id));
  assert.equal(reconnect.status, 200);
  const streamGets = net.streamRequests();
  assert.equal(streamGets.length, 2, `stream GETs: ${JSON.stringify(streamGets)}`);
  assert.equal(streamGets[0].headers["last-event-id"], undefined);
  for (const r of net.requests) {
    if (TOKEN) assert.equal(r.headers.authorization, `Bearer ${TOKEN}`);
  }
  t.diagnostic(`reconnect request headers: ${JSON.stringify(redact(reconnect.headers))}`);

  await deleteSession(session.id);
  const done = await events.next("done");
  assert.deepEqual(done.data, {});
  await events.end();

  assert.deepEqual(
    events.seen.map((e) => e.event),
    [
      "session_ready",
      "message_complete",
      "tool_use",
      "permission_request",
      "tool_result",
      "message_complete",
      "result",
      "done",
    ],
  );
  assertDense(events.seen, 1, "read_allow");
  assert.equal(session.lastEventId, String(done.id));
});

test("multi_turn: second turn while detached, attachSession resume, DELETE ends with done", { timeout: TEST_MS }, async (t) => {
  const net = instrumentedFetch();
  const agent = client({ fetchImpl: net.impl });
  const session = await within(agent.createSession({ model: "multi_turn" }), "POST /sessions");
  const events = new EventReader(session, "multi_turn");
  await events.next("session_ready");

  await within(session.send("Hi"), "send (turn 1)");
  const hello = await events.next("message_complete");
  assert.deepEqual(hello.data.message.content, [{ type: "text", text: "Hi! What's your name?" }]);
  assert.equal((await events.next("result")).data.subtype, "success");

  // Detach (the client's way to drop the stream but keep the server session).
  session.detach();
  await events.end();
  const cursor = session.lastEventId;
  assert.equal(cursor, "3");

  // Turn 2 while nobody listens; a fresh subscriber from the start shows when it is complete.
  await within(session.send("I'm Bob"), "send (turn 2)");
  const full = new EventReader(agent.attachSession(session.id), "full");
  for (const name of ["session_ready", "message_complete", "result", "message_complete", "result"]) {
    await full.next(name);
  }
  assertDense(full.seen, 1, "full replay");

  const resumed = new EventReader(
    agent.attachSession(session.id, { resumeFromEventId: cursor }),
    "resumed",
  );
  const nice = await resumed.next("message_complete");
  assert.equal(nice.data.message_id, "m_2");
  assert.deepEqual(nice.data.message.content, [{ type: "text", text: "Nice to meet you." }]);
  assert.equal((await resumed.next("result")).data.subtype, "success");
  assert.deepEqual(resumed.seen, full.seen.slice(3), "resume delivered exactly the missed events");
  const resumeGet = net.streamRequests().at(-1);
  assert.equal(resumeGet.headers["last-event-id"], cursor);
  assert.equal(resumeGet.status, 200);

  await deleteSession(session.id);
  for (const reader of [resumed, full]) {
    const done = await reader.next("done");
    assert.equal(done.id, 6);
    await reader.end();
  }
  assertDense(resumed.seen, 4, "resumed");
  assertDense(full.seen, 1, "full");
  t.diagnostic(`turn 2 replayed after Last-Event-ID ${cursor}: ${resumed.describe()}`);
});

test("echo: two turns on one stream, then close()", { timeout: TEST_MS }, async () => {
  const agent = client();
  const session = await within(agent.createSession({ model: "echo" }), "POST /sessions");
  const events = new EventReader(session, "echo");
  await events.next("session_ready");
  for (const [n, text] of [[1, "first"], [2, "second"]]) {
    await within(session.send(text), `send ${text}`);
    const echo = await events.next("message_complete");
    assert.equal(echo.data.message_id, `msg_echo_${n}`);
    assert.deepEqual(echo.data.message.content, [{ type: "text", text }]);
    assert.equal(echo.data.message.model, "echo");
    await events.next("result");
  }
  assertDense(events.seen, 1, "echo");
  // close() = abort the local stream + DELETE; a second subscriber sees the session's `done`.
  // (Streams open lazily: reading the last result first proves the watcher is connected.)
  const watcher = new EventReader(agent.attachSession(session.id, { resumeFromEventId: "4" }), "watcher");
  assert.equal((await watcher.next("result")).id, 5);
  await within(session.close(), "close()");
  await events.end();
  const done = await watcher.next("done");
  assert.equal(done.id, 6);
  await watcher.end();
});

test("client-visible errors: 401, 404, 412, 409", { timeout: TEST_MS }, async () => {
  if (TOKEN) {
    const wrong = createAgentClient({ baseUrl: BASE_URL, token: `${TOKEN}-wrong` });
    const err = await within(wrong.createSession({ model: "echo" }).catch((e) => e), "401");
    assert.ok(err instanceof TransportError, String(err));
    assert.equal(err.status, 401);
    assert.match(err.body, /Invalid token/);
  }
  const agent = client();
  const ghost = new EventReader(
    agent.attachSession("00000000-0000-4000-8000-000000000000"),
    "unknown session",
  );
  const notFound = await within(ghost.iterator.next().catch((e) => e), "404");
  assert.ok(notFound instanceof TransportError, String(notFound));
  assert.equal(notFound.status, 404);

  const session = await within(agent.createSession({ model: "read_allow" }), "POST /sessions");
  opened.add(session);
  const future = new EventReader(agent.attachSession(session.id, { resumeFromEventId: "99" }), "future");
  const gone = await within(future.iterator.next().catch((e) => e), "412");
  assert.ok(gone instanceof TransportError, String(gone));
  assert.equal(gone.status, 412);

  const events = new EventReader(session, "read_allow (errors)");
  await events.next("session_ready");
  await within(session.send("go"), "send");
  await events.next("message_complete");
  await events.next("tool_use");
  const prompt = await events.next("permission_request");
  await within(session.approve(prompt.data.correlation_id), "first approve");
  const again = await within(session.approve(prompt.data.correlation_id).catch((e) => e), "409");
  assert.ok(again instanceof TransportError, String(again));
  assert.equal(again.status, 409);
  await events.next("tool_result");
  await events.next("message_complete");
  await events.next("result");
  await deleteSession(session.id);
  await events.next("done");
  await events.end();
  assertDense(events.seen, 1, "read_allow (errors)");
});

function redact(headers) {
  const out = { ...headers };
  if (out.authorization) out.authorization = "Bearer <token>";
  return out;
}
