// A rejected API key through the published `@agent-webkit/core` 0.2.0 client: the server runs
// the real Claude CLI against the mock Messages API, which answers 401. The client must see
// the CLI's retry as an `api_retry` extension event and an `error {code:"authentication_failed"}`
// within a second, then the turn's `result` (not minutes of retries).
//
//   AGENT_WEBKIT_URL, AGENT_WEBKIT_TOKEN   the server (--agent claude, real CLI, mock API)
//   AGENT_WEBKIT_CWD                       a working directory inside its allowed root
//
// Prints `API_RETRY_AT=<epoch ms>` and `ERROR_AT=<epoch ms>` for the Rust side, which compares
// them with the time of the mock's first failed call. Run by
// crates/agent-webkit-server/tests/js_client.rs against both adapters.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createAgentClient } from "@agent-webkit/core";

const BASE_URL = process.env.AGENT_WEBKIT_URL;
const TOKEN = process.env.AGENT_WEBKIT_TOKEN || undefined;
const CWD = process.env.AGENT_WEBKIT_CWD;
const WAIT_MS = 60_000; // the real CLI cold-starts; CI machines are busy

/** `promise`, or a rejection naming `what` after `ms`. */
function within(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

test("401 from the API: api_retry, then authentication_failed within a second, then result", { timeout: 3 * WAIT_MS }, async () => {
  const agent = createAgentClient({ baseUrl: BASE_URL, token: TOKEN });
  const session = await within(agent.createSession({ cwd: CWD }), "POST /sessions");
  const events = session.events()[Symbol.asyncIterator]();
  const next = async (what) => {
    const { value, done } = await within(events.next(), what);
    assert.ok(!done, `stream ended waiting for ${what}`);
    return value;
  };
  assert.equal((await next("session_ready")).event, "session_ready");
  await within(session.send("[[error: 401]]"), "send");
  const seen = [];
  let retryAt;
  let error;
  while (!error) {
    const ev = await next(`error after ${JSON.stringify(seen)}`);
    seen.push(ev.event);
    if (ev.event === "api_retry" && retryAt === undefined) {
      retryAt = Date.now();
      assert.equal(ev.data.attempt, 1, JSON.stringify(ev.data));
      assert.equal(ev.data.error_status, 401, JSON.stringify(ev.data));
      assert.equal(ev.data.error, "authentication_failed", JSON.stringify(ev.data));
      assert.equal(typeof ev.data.max_retries, "number", JSON.stringify(ev.data));
      assert.equal(typeof ev.data.retry_delay_ms, "number", JSON.stringify(ev.data));
    }
    if (ev.event === "error") error = ev;
  }
  const errorAt = Date.now();
  console.log(`API_RETRY_AT=${retryAt}`);
  console.log(`ERROR_AT=${errorAt}`);
  assert.ok(retryAt !== undefined, `api_retry before the error: ${JSON.stringify(seen)}`);
  assert.equal(error.data.code, "authentication_failed", JSON.stringify(error.data));
  assert.ok(errorAt - retryAt < 1000, `error ${errorAt - retryAt} ms after api_retry`);
  // The turn ends (interrupted) instead of retrying for minutes.
  for (;;) {
    const ev = await next(`result after ${JSON.stringify(seen)}`);
    seen.push(ev.event);
    assert.notEqual(ev.event, "error", "authentication_failed reported once");
    if (ev.event === "result") break;
  }
  await session.close();
});
