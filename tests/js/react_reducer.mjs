// The published @agent-webkit/react 0.2.0 reducer fed a recorded event stream (a real-CLI tool
// turn). Inputs come from the environment (set by
// crates/agent-webkit-claude/tests/reducer_real_cli.rs):
//   AGENT_WEBKIT_REACT_REDUCER  path of the package's dist/reducer.js (it imports nothing)
//   AGENT_WEBKIT_EVENTS         path of a JSON array of {event, data}
//   AGENT_WEBKIT_EXPECT         "clean": no assistant message ever holds a block that is not
//                               text/tool_use/thinking; "junk": some message does (the control
//                               run with tool-input deltas on, proving the check can fail).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const { reduce, initialState } = await import(
  pathToFileURL(process.env.AGENT_WEBKIT_REACT_REDUCER).href
);
const events = JSON.parse(readFileSync(process.env.AGENT_WEBKIT_EVENTS, "utf8"));
const expect = process.env.AGENT_WEBKIT_EXPECT ?? "clean";
const ALLOWED = new Set(["text", "tool_use", "thinking"]);

test(`the published reducer over a real tool turn (${expect})`, () => {
  let state = initialState;
  const strays = [];
  let sawToolUse = false;
  for (const ev of events) {
    state = reduce(state, { type: "server_event", event: { event: ev.event, data: ev.data } });
    for (const m of state.messages) {
      if (m.kind !== "assistant") continue;
      for (const block of m.content) {
        if (block?.type === "tool_use") sawToolUse = true;
        if (!ALLOWED.has(block?.type)) strays.push({ after: ev.event, block });
      }
    }
  }
  assert.ok(sawToolUse, "the recorded turn holds a tool_use block");
  if (expect === "clean") {
    assert.deepEqual(strays.slice(0, 3), [], `${strays.length} stray blocks`);
  } else {
    assert.ok(strays.length > 0, "the control run shows stray blocks");
  }
  const last = state.messages.filter((m) => m.kind === "assistant").at(-1);
  assert.ok(last && !last.streaming, "the last assistant message is reconciled");
});
