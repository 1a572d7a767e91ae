// The transcript of one session: wire events → DOM. Each event is applied once (the stream
// dedupes by seq). Streaming text (message_delta) is shown as it arrives and replaced by the
// message's final blocks at message_complete. Model output goes through renderMarkdown, which
// builds DOM nodes and never parses HTML. A user message shows at once when sent and becomes
// an anchor (fork / rewind from it) when its `user_message` event names its uuid; a `rewound`
// event drops that message and everything after it.

import { renderMarkdown } from "./markdown.js";
import { permissionCard, questionCard, hookCard } from "./prompts.js";
import { anchorActions, contentText } from "./anchors.js";

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function json(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

// A tool result's output as text (a string, or content blocks).
function outputText(output) {
  if (Array.isArray(output)) {
    return output.map((b) => (b && b.type === "text" ? b.text : json(b))).join("\n");
  }
  return json(output);
}

// A JSON value as text with object keys sorted: the same content whatever order the server
// writes its keys in.
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

// Events that only happen inside a turn.
const TURN_EVENTS = new Set([
  "message_delta",
  "message_complete",
  "tool_use",
  "tool_result",
  "permission_request",
  "ask_user_question",
  "hook_decision_request",
]);

export class Transcript {
  // list: the <ol>; send(message): posts an input (returns a promise).
  constructor(list, send) {
    this.list = list;
    this.send = send;
    this.pending = []; // user messages shown but not yet anchored: {item, key}
    this.anchorHandlers = null; // {fork, dryRun, rewind} (anchors.js)
    this.attachmentNames = new Map(); // attachment_id → name, for showing sent messages
    this.onUsage = () => {};
    this.messages = new Map(); // message_id → {item, body, streamed}
    this.tools = new Map(); // tool_use_id → card parts
    this.prompts = new Map(); // correlation_id → card
    this.turnOpen = false;
    this.onTurn = () => {};
  }

  add(node) {
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    this.list.append(node);
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
    return node;
  }

  note(text, cls = "note") {
    return this.add(el("li", cls, text));
  }

  // A user message (string or blocks) as an item, not yet in the list.
  userItem(content) {
    const item = el("li", "msg user");
    item.dataset.content = JSON.stringify(content ?? "");
    item.append(el("div", "role", "you"));
    const body = el("div", "body");
    if (typeof content === "string") {
      body.textContent = content;
    } else if (Array.isArray(content)) {
      for (const block of content) {
        if (block && block.type === "text") {
          body.append(el("div", "text", block.text || ""));
        } else if (block && block.type === "attachment") {
          const name = this.attachmentNames.get(block.attachment_id) || block.attachment_id;
          const chip = el("span", "chip sent", name);
          chip.title = "attachment";
          chip.dataset.attachmentId = block.attachment_id || "";
          body.append(chip, " ");
        } else if (block && block.type === "image") {
          body.append(el("span", "chip sent", "image"), " ");
        } else {
          body.append(el("pre", "json", json(block)));
        }
      }
    }
    item.append(body);
    return item;
  }

  // Shown when sent (pending until its `user_message` event).
  userMessage(content) {
    const item = this.add(this.userItem(content));
    item.classList.add("pending");
    this.pending.push({ item, key: canonical(content) });
    this.setTurn(true);
    return item;
  }

  // Takes back a pending message that the server refused.
  unsend(item) {
    this.pending = this.pending.filter((p) => p.item !== item);
    item.remove();
  }

  // `user_message`: the message this tab sent (in order), or one from elsewhere / the log.
  anchored(data) {
    const key = canonical(data.content);
    const at = this.pending.findIndex((p) => p.key === key);
    let item;
    if (at >= 0) {
      item = this.pending[at].item;
      this.pending.splice(at, 1);
      item.classList.remove("pending");
      this.list.append(item); // a queued message's turn starts now
    } else {
      item = this.add(this.userItem(data.content));
    }
    if (typeof data.uuid === "string") {
      item.dataset.uuid = data.uuid;
      if (this.anchorHandlers) anchorActions(item, data.uuid, this.anchorHandlers);
    }
    this.setTurn(true);
  }

  // The user message `uuid` and everything after it leave the view; returns its text, or
  // null when it is not shown (already dropped).
  dropFrom(uuid) {
    const item = this.anchor(uuid);
    if (!item) return null;
    const text = this.textOf(uuid);
    let node = item;
    while (node) {
      const next = node.nextElementSibling;
      node.remove();
      node = next;
    }
    const gone = (n) => !n.isConnected;
    for (const [k, v] of this.messages) if (gone(v.item)) this.messages.delete(k);
    for (const [k, v] of this.tools) if (gone(v.card)) this.tools.delete(k);
    for (const [k, v] of this.prompts) if (gone(v)) this.prompts.delete(k);
    this.pending = this.pending.filter((p) => !gone(p.item));
    return text;
  }

  anchor(uuid) {
    return [...this.list.querySelectorAll("li.msg.user")].find((li) => li.dataset.uuid === uuid) || null;
  }

  // The text of the anchored user message `uuid` ("" when not shown).
  textOf(uuid) {
    const item = this.anchor(uuid);
    if (!item) return "";
    try {
      return contentText(JSON.parse(item.dataset.content || '""'));
    } catch {
      return "";
    }
  }

  // Copies of what this view shows up to the end of the turn the user message `uuid` started
  // (everything, without a uuid): a fork's earlier conversation, inert (no handlers, no
  // actions), to show above the fork's own events.
  history(uuid) {
    const items = [...this.list.children];
    let end = items.length;
    if (uuid) {
      const at = items.findIndex((li) => li.classList.contains("user") && li.dataset.uuid === uuid);
      if (at < 0) return [];
      const next = items.findIndex((li, i) => i > at && li.classList.contains("user") && !li.classList.contains("pending"));
      end = next < 0 ? items.length : next;
    }
    return items.slice(0, end).flatMap((li) => {
      if (li.classList.contains("pending") || li.classList.contains("fork-mark")) return [];
      const copy = li.cloneNode(true);
      copy.classList.add("inherited");
      if (copy.dataset.uuid) {
        copy.dataset.sourceUuid = copy.dataset.uuid;
        delete copy.dataset.uuid;
      }
      copy.querySelectorAll(".anchor-actions, .rewind-panel").forEach((n) => n.remove());
      copy.querySelectorAll("button, input, textarea, select").forEach((c) => (c.disabled = true));
      return [copy];
    });
  }

  // Shows a fork's inherited conversation (from history()) with a line saying where it is from.
  inherit(items, sourceId) {
    for (const item of items) this.list.append(item);
    const mark = el("li", "note fork-mark", `forked from ${sourceId}: the conversation above comes from there`);
    this.list.append(mark);
  }

  // `rewound` (from this tab or another): the later turns go when the conversation was rewound.
  rewound(data) {
    if (data.conversation && data.conversation.rewound) this.dropFrom(data.message_uuid);
    const changed = (data.files && data.files.files_changed) || [];
    const parts = ["rewound"];
    if (data.conversation && data.conversation.rewound) parts.push("conversation");
    if (data.files && data.files.rewound) parts.push(`${changed.length} file${changed.length === 1 ? "" : "s"} restored`);
    const line = this.note(parts.join(" · "), "note rewound");
    line.dataset.messageUuid = data.message_uuid || "";
  }

  setTurn(open) {
    this.turnOpen = open;
    this.onTurn(open);
  }

  assistant(messageId) {
    let entry = this.messages.get(messageId);
    if (!entry) {
      const item = el("li", "msg assistant");
      item.dataset.messageId = messageId;
      const role = el("div", "role", "assistant");
      const body = el("div", "body");
      item.append(role, body);
      entry = { item, role, body, streamed: null };
      this.messages.set(messageId, entry);
      this.add(item);
    }
    return entry;
  }

  toolCard(id, name, input) {
    let tool = this.tools.get(id);
    if (!tool) {
      const card = el("li", "card tool");
      card.dataset.toolUseId = id;
      const details = el("details");
      details.open = true;
      const summary = el("summary");
      const title = el("span", "tool-name", name);
      const state = el("span", "tool-state", "running");
      summary.append(title, " ", state);
      const inputPre = el("pre", "json tool-input");
      const result = el("pre", "tool-result");
      result.hidden = true;
      details.append(summary, inputPre, result);
      card.append(details);
      tool = { card, details, title, state, inputPre, result };
      this.tools.set(id, tool);
      this.add(card);
    }
    if (name) tool.title.textContent = name;
    if (input !== undefined) tool.inputPre.textContent = json(input);
    return tool;
  }

  apply({ seq, event, data }) {
    // A session opened mid-turn (or by another tab) shows the turn as running once the agent
    // streams anything, so Interrupt works there too.
    if (TURN_EVENTS.has(event) && !this.turnOpen) this.setTurn(true);
    switch (event) {
      case "session_ready":
        this.note(`session ready (protocol ${data.protocol_version})`);
        break;
      case "message_delta":
        this.delta(data);
        break;
      case "message_complete":
        this.complete(data);
        break;
      case "tool_use":
        this.toolCard(data.tool_use_id, data.tool_name, data.input);
        break;
      case "tool_result": {
        const tool = this.toolCard(data.tool_use_id, "", undefined);
        tool.result.hidden = false;
        tool.result.textContent = outputText(data.output);
        tool.card.classList.toggle("error", Boolean(data.is_error));
        tool.state.textContent = data.is_error ? "error" : "done";
        break;
      }
      case "permission_request":
        this.prompt(data.correlation_id, permissionCard(data, this.send));
        break;
      case "ask_user_question":
        this.prompt(data.correlation_id, questionCard(data, this.send));
        break;
      case "hook_decision_request":
        this.prompt(data.correlation_id, hookCard(data, this.send));
        break;
      case "result":
        this.result(data);
        break;
      case "error":
        this.error(data);
        break;
      case "user_message":
        this.anchored(data);
        break;
      case "rewound":
        this.rewound(data);
        break;
      case "usage":
        this.onUsage(data);
        break;
      case "mcp_status_change":
        this.note(`MCP server ${data.server_name}: ${data.status}`);
        break;
      case "api_retry":
        this.note(`model API retry ${data.attempt}/${data.max_retries} (${data.error_status ?? "no status"} ${data.error ?? ""})`, "note warn");
        break;
      case "done":
        this.note("session ended", "note ended");
        this.setTurn(false);
        break;
      default:
        this.note(`${event} ${JSON.stringify(data)}`);
    }
    if (seq !== null && seq !== undefined) this.list.dataset.lastSeq = String(seq);
  }

  delta(data) {
    const delta = data.delta || {};
    const entry = this.assistant(data.message_id);
    if (!entry.streamed) {
      entry.streamed = el("div", "streaming");
      entry.body.append(entry.streamed);
      entry.item.classList.add("is-streaming");
    }
    if (delta.type === "text" && typeof delta.text === "string") {
      entry.streamed.append(delta.text);
    } else if (delta.type === "thinking" && typeof delta.thinking === "string") {
      entry.streamed.append(el("span", "thinking", delta.thinking));
    }
  }

  complete(data) {
    const message = data.message || {};
    const entry = this.assistant(data.message_id ?? message.id);
    entry.body.replaceChildren();
    entry.streamed = null;
    entry.item.classList.remove("is-streaming");
    entry.item.classList.add("complete");
    if (message.model) {
      entry.role.textContent = `assistant · ${message.model}`;
      entry.item.dataset.model = message.model;
    }
    for (const block of message.content || []) {
      if (block.type === "text") {
        const text = el("div", "text");
        text.append(renderMarkdown(block.text || ""));
        entry.body.append(text);
      } else if (block.type === "thinking") {
        const details = el("details", "thinking");
        details.append(el("summary", null, "thinking"), el("pre", null, block.thinking || ""));
        entry.body.append(details);
      } else if (block.type === "tool_use") {
        entry.body.append(el("div", "muted", `→ ${block.name}`));
      } else {
        entry.body.append(el("pre", "json", json(block)));
      }
    }
    if (!entry.body.hasChildNodes()) entry.item.hidden = true;
  }

  prompt(id, card) {
    this.prompts.set(id, card);
    this.add(card);
    const first = card.querySelector("button, input");
    if (first && document.activeElement === document.body) first.focus();
  }

  result(data) {
    const parts = [`turn ${data.subtype}`];
    if (typeof data.total_cost_usd === "number") parts.push(`$${data.total_cost_usd.toFixed(4)}`);
    const u = data.usage;
    if (u && typeof u === "object") {
      const tokens = [];
      if (u.input_tokens !== undefined) tokens.push(`${u.input_tokens} in`);
      if (u.output_tokens !== undefined) tokens.push(`${u.output_tokens} out`);
      if (u.cache_read_input_tokens) tokens.push(`${u.cache_read_input_tokens} cache read`);
      if (tokens.length) parts.push(tokens.join(" / ") + " tokens");
    }
    if (typeof data.duration_ms === "number") parts.push(`${(data.duration_ms / 1000).toFixed(1)} s`);
    const line = this.note(parts.join(" · "), `note result ${data.is_error ? "error" : ""}`);
    line.dataset.subtype = data.subtype;
    for (const tool of this.tools.values()) {
      if (tool.state.textContent === "running") tool.state.textContent = "no result";
    }
    this.setTurn(false);
  }

  error(data) {
    if (data.code === "permission_cancelled" && this.prompts.has(data.correlation_id)) {
      const card = this.prompts.get(data.correlation_id);
      card.classList.add("withdrawn");
      card.querySelectorAll("button, input, textarea").forEach((c) => (c.disabled = true));
      const status = card.querySelector(".prompt-status");
      if (status) status.textContent = "withdrawn by the agent";
      return;
    }
    const item = el("li", "error-banner");
    item.setAttribute("role", "alert");
    item.dataset.code = data.code || "";
    item.append(el("strong", null, data.code || "error"), " ", data.message || "");
    this.add(item);
  }
}
