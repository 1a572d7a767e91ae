// Bursts larger than the ring through the published `@agent-webkit/core` 0.2.0 client, beside a
// raw SSE reader (fetch + a minimal parser), against a server with the replay agent:
//
//   AGENT_WEBKIT_URL         a server with --ring-size 1000 (and the default lag budget)
//   AGENT_WEBKIT_TIGHT_URL   a server with --ring-size 100 --lag-budget-bytes 1048576
//   AGENT_WEBKIT_TOKEN       the bearer token of both
//
// Run by crates/agent-webkit-server/tests/js_client.rs against both adapters.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createAgentClient, TransportError } from "@agent-webkit/core";

const BASE_URL = process.env.AGENT_WEBKIT_URL;
const TIGHT_URL = process.env.AGENT_WEBKIT_TIGHT_URL;
const TOKEN = process.env.AGENT_WEBKIT_TOKEN || undefined;
const WAIT_MS = Number(process.env.AGENT_WEBKIT_SMOKE_TIMEOUT_MS || 10_000);
const BURST_MS = 120_000;

if (!BASE_URL || !TIGHT_URL) {
  throw new Error("AGENT_WEBKIT_URL and AGENT_WEBKIT_TIGHT_URL must be set");
}

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

/** A raw SSE subscriber: fetch + split on blank lines; yields {id, event, data}. */
async function* rawEvents(baseUrl, id) {
  const headers = { accept: "text/event-stream" };
  if (TOKEN) headers.authorization = `Bearer ${TOKEN}`;
  const res = await fetch(`${baseUrl}/sessions/${id}/stream`, { headers });
  assert.equal(res.status, 200);
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, end);
      buf = buf.slice(end + 2);
      if (frame.startsWith(":")) continue;
      const ev = { id: undefined, event: "message", data: "" };
      for (const line of frame.split("\n")) {
        const at = line.indexOf(": ");
        const [field, value] = at < 0 ? [line, ""] : [line.slice(0, at), line.slice(at + 2)];
        if (field === "id") ev.id = Number(value);
        else if (field === "event") ev.event = value;
        else if (field === "data") ev.data = value;
      }
      yield ev;
    }
  }
}

/** Reads `events` to the turn's `result` (or an event without id); returns [id, event] pairs. */
async function readTurn(events, label) {
  const seen = [];
  for await (const ev of events) {
    const id = ev.id === undefined || ev.id < 0 ? -1 : ev.id;
    seen.push([id, ev.event]);
    if (ev.event === "result" || id === -1) return seen;
  }
  throw new Error(`${label}: stream ended after ${seen.length} events`);
}

function assertWhole(seen, n, label) {
  const ids = seen.map(([id]) => id);
  const bad = ids.findIndex((id, i) => id !== i + 2);
  assert.ok(
    bad === -1 && ids.length === n + 1,
    `${label}: every seq 2..=${n + 2} in order; ${ids.length} events, first mismatch at ` +
      `${bad}: ${JSON.stringify(seen.slice(Math.max(0, bad - 2), bad + 3))}`,
  );
}

for (const n of [2_000, 20_000]) {
  test(`a ${n}-event burst with ring 1000 reaches a raw reader and the client whole`, { timeout: BURST_MS }, async () => {
    const agent = createAgentClient({ baseUrl: BASE_URL, token: TOKEN });
    const session = await within(agent.createSession({ model: `stream:${n}:0:200` }), "POST /sessions");
    opened.add(session);
    const client = session.events()[Symbol.asyncIterator]();
    const raw = rawEvents(BASE_URL, session.id)[Symbol.asyncIterator]();
    for (const [label, it] of [["client", client], ["raw", raw]]) {
      const { value } = await within(it.next(), `${label}: session_ready`);
      assert.equal(value.event, "session_ready");
    }
    await within(session.send("go"), "send");
    const iterable = (it) => ({ [Symbol.asyncIterator]: () => it });
    const [fromClient, fromRaw] = await within(
      Promise.all([readTurn(iterable(client), "client"), readTurn(iterable(raw), "raw")]),
      "both readers to reach result",
      BURST_MS - 10_000,
    );
    assertWhole(fromClient, n, "client");
    assertWhole(fromRaw, n, "raw");
    await raw.return();
    await session.close();
  });
}

test("a client that stops reading is cut with evicted past the lag budget, then 412", { timeout: BURST_MS }, async () => {
  const n = 10_000; // 2000-byte texts: ~20 MB, more than socket buffers, ring and budget hold
  const agent = createAgentClient({ baseUrl: TIGHT_URL, token: TOKEN });
  const session = await within(agent.createSession({ model: `stream:${n}:0:2000` }), "POST /sessions");
  opened.add(session);
  const stalled = session.events()[Symbol.asyncIterator]();
  const raw = rawEvents(TIGHT_URL, session.id)[Symbol.asyncIterator]();
  for (const [label, it] of [["client", stalled], ["raw", raw]]) {
    const { value } = await within(it.next(), `${label}: session_ready`);
    assert.equal(value.event, "session_ready");
  }
  await within(session.send("go"), "send");
  // The raw reader keeps reading (it paces the test); the client does not pull meanwhile. With
  // a budget this small a heavily loaded machine can let even the reading one fall past it
  // (the rule working; keeping-up readers getting everything is the tests above): a dense
  // prefix, whole or cut with evicted.
  const fromRaw = await within(readTurn({ [Symbol.asyncIterator]: () => raw }, "raw"), "raw reader", BURST_MS / 2);
  if (fromRaw.at(-1)?.[0] === -1) {
    const ids = fromRaw.slice(0, -1).map(([id]) => id);
    assert.deepEqual(ids, ids.map((_, i) => i + 2), "raw (live) reader: a dense prefix before its cut");
  } else {
    assertWhole(fromRaw, n, "raw (live) reader");
  }
  await raw.return();
  // Now the client reads what its socket held, then the cut.
  const seen = [];
  let cut;
  for (;;) {
    const { value, done } = await within(stalled.next(), `stalled client after ${seen.length} events`);
    assert.ok(!done, "the client's stream ended without the evicted error");
    if (value.event === "error") {
      cut = value;
      break;
    }
    seen.push(value.id);
  }
  assert.equal(cut.data.code, "evicted", JSON.stringify(cut));
  assert.equal(cut.id, -1, "the evicted error carries no id");
  assert.ok(seen.length < n, `cut before the end (${seen.length} events)`);
  assert.deepEqual(seen, seen.map((_, i) => i + 2), "a dense prefix before the cut");
  assert.equal(session.lastEventId, String(seen.at(-1) ?? 1));
  // The client reconnects by itself with Last-Event-ID: that cursor is gone (412).
  const err = await within(stalled.next().catch((e) => e), "the client's reconnect");
  assert.ok(err instanceof TransportError, String(err));
  assert.equal(err.status, 412);
  await session.close();
});
