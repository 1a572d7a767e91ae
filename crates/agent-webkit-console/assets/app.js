// The console page: token, session list, create form, and one open session (transcript,
// composer, controls). Talks to the server only through the public wire protocol (api.js).

import { Api, SessionStream } from "./api.js";
import { Transcript } from "./transcript.js";
import { AttachmentTray } from "./attachments.js";
import { UsagePanel } from "./usage.js";

const TOKEN_KEY = "agent-webkit.token";
const SESSIONS_KEY = "agent-webkit.sessions";

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;

const api = new Api(() => store.getItem(TOKEN_KEY) || "");
let current = null; // {id, stream, transcript}
let config = { agent: "", scenarios: [] };
const tray = new AttachmentTray(api, $("attachments"), () => {
  $("send").disabled = tray.uploading;
});
const usage = new UsagePanel(api, {
  total: $("usage-total"),
  models: $("usage-models"),
  contextButton: $("context-button"),
  context: $("context"),
});

function notice(text, kind = "error") {
  const box = $("notice");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
}

function tabSessions() {
  try {
    const list = JSON.parse(store.getItem(SESSIONS_KEY) || "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function saveTabSessions(list) {
  store.setItem(SESSIONS_KEY, JSON.stringify(list));
}

async function refreshSessions() {
  let list = null;
  try {
    list = await api.listSessions();
  } catch (err) {
    notice(err.message);
  }
  const source = $("list-source");
  if (list) {
    source.textContent = "(server)";
  } else {
    source.textContent = "(this tab)";
    list = tabSessions();
  }
  const ul = $("sessions");
  ul.replaceChildren();
  if (list.length === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "none yet";
    ul.append(li);
  }
  for (const s of list) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "session-link";
    b.dataset.sessionId = s.id;
    const label = s.label || s.model || "";
    b.textContent = label ? `${label} · ${s.id.slice(0, 8)}` : s.id.slice(0, 8);
    b.title = s.id;
    if (current && current.id === s.id) b.setAttribute("aria-current", "true");
    b.addEventListener("click", () => openSession(s.id));
    li.append(b);
    ul.append(li);
  }
}

function setConn(state, stream) {
  const conn = $("conn");
  conn.textContent = state;
  conn.dataset.state = state;
  if (stream) conn.dataset.reconnects = String(stream.reconnects);
}

function closeCurrent() {
  if (current) current.stream.stop();
  current = null;
}

// fork: {history, from} when this tab just forked it (its inherited conversation to show).
function openSession(id, fork = null) {
  closeCurrent();
  notice("");
  $("empty").hidden = true;
  $("session").hidden = false;
  $("session-id").textContent = id;
  const list = $("transcript");
  list.replaceChildren();
  delete list.dataset.lastSeq;
  const send = (message) => api.input(id, message);
  const transcript = new Transcript(list, send);
  transcript.anchorHandlers = {
    fork: (uuid) => forkSession(id, uuid),
    dryRun: (uuid, files) => api.input(id, { type: "rewind", message_uuid: uuid, files, conversation: true, dry_run: true }),
    rewind: (uuid, files) => rewind(id, transcript, uuid, files),
  };
  transcript.onUsage = (data) => usage.usage(data);
  if (fork && fork.history.length > 0) transcript.inherit(fork.history, fork.from);
  tray.reset(id);
  usage.reset(id);
  transcript.onTurn = (open) => {
    $("interrupt").disabled = !open;
    $("session").dataset.turn = open ? "open" : "idle";
  };
  transcript.onTurn(false);
  const stream = new SessionStream(api, id, {
    onEvent: (ev) => transcript.apply(ev),
    onState: (state) => setConn(state, stream),
    onFatal: (err) => transcript.error({ code: err.code || `http_${err.status}`, message: err.message }),
  });
  current = { id, stream, transcript };
  showDetail(id);
  if (location.hash !== `#${id}`) history.replaceState(null, "", `#${id}`);
  stream.run();
  refreshSessions();
  $("message").focus();
}

// GET /sessions/{id} when the server offers it: the session's current model and mode.
async function showDetail(id) {
  let detail;
  try {
    detail = await api.detail(id);
  } catch {
    return; // not offered (405) or not allowed: the controls start empty
  }
  if (!detail || !current || current.id !== id) return;
  if (typeof detail.model === "string") $("model-input").placeholder = detail.model;
  if (detail.cost) usage.detailCost(detail.cost);
  const mode = detail.permission_mode;
  if (typeof mode === "string" && [...$("mode-select").options].some((o) => o.value === mode)) {
    $("mode-select").value = mode;
  }
}

async function createSession(event) {
  event.preventDefault();
  const body = {};
  const scenario = $("create-scenario").value;
  const model = $("create-model").value.trim();
  // A typed model (with replay: a scenario name such as stream:60:50) wins over the list.
  if (model) body.model = model;
  else if (config.agent === "replay" && scenario) body.model = scenario;
  const mode = $("create-mode").value;
  if (mode) body.permission_mode = mode;
  const cwd = $("create-cwd").value.trim();
  if (cwd) body.cwd = cwd;
  const button = $("create-button");
  button.disabled = true;
  try {
    const created = await api.createSession(body);
    const list = tabSessions().filter((s) => s.id !== created.session_id);
    list.unshift({ id: created.session_id, label: body.model || "", created: Date.now() });
    saveTabSessions(list);
    openSession(created.session_id);
  } catch (err) {
    notice(`Could not create the session: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

// A new session from `sourceId`'s conversation (up to the turn of `messageUuid`, or all of
// it), opened at once.
async function forkSession(sourceId, messageUuid) {
  // What the fork starts from, as this view shows it (the fork's own stream starts after it).
  const history = current && current.id === sourceId ? current.transcript.history(messageUuid) : [];
  let created;
  try {
    created = await api.forkSession(sourceId, messageUuid);
  } catch (err) {
    notice(`Could not fork: ${err.message}`);
    return;
  }
  const list = tabSessions().filter((s) => s.id !== created.session_id);
  list.unshift({ id: created.session_id, label: `fork of ${sourceId.slice(0, 8)}`, created: Date.now() });
  saveTabSessions(list);
  openSession(created.session_id, { history, from: sourceId });
  notice(`Forked from ${sourceId}${messageUuid ? " at a message" : ""}.`, "info");
}

// Rewinds for real; the rewound message's text goes back to the composer for editing.
async function rewind(id, transcript, uuid, files) {
  const text = transcript.textOf(uuid);
  const answer = await api.input(id, { type: "rewind", message_uuid: uuid, files, conversation: true, dry_run: false });
  if (answer && answer.conversation && answer.conversation.rewound) {
    transcript.dropFrom(uuid);
    if (current && current.id === id) {
      const box = $("message");
      box.value = text;
      box.focus();
    }
  }
  return answer;
}

async function sendMessage(event) {
  event.preventDefault();
  if (!current || tray.uploading) return;
  const box = $("message");
  const text = box.value;
  const attachments = tray.blocks();
  if (!text.trim() && attachments.length === 0) return;
  const { id, transcript } = current;
  for (const [attachmentId, a] of tray.known()) transcript.attachmentNames.set(attachmentId, a.name);
  // Files first, then the words about them (the order a reader meets them in).
  const content = attachments.length === 0 ? text : [...attachments, ...(text.trim() ? [{ type: "text", text }] : [])];
  const item = transcript.userMessage(content);
  box.value = "";
  try {
    await api.input(id, { type: "user_message", content });
    tray.clearSent();
  } catch (err) {
    transcript.unsend(item);
    transcript.error({ code: err.code || `http_${err.status}`, message: `message not sent: ${err.message}` });
    box.value = text;
  }
}

async function control(message, done) {
  if (!current) return;
  const { id, transcript } = current;
  try {
    await api.input(id, message);
    if (done) transcript.note(done);
  } catch (err) {
    transcript.error({ code: err.code || `http_${err.status}`, message: `${message.type}: ${err.message}` });
  }
}

async function deleteSession() {
  if (!current) return;
  const { id } = current;
  try {
    await api.deleteSession(id);
  } catch (err) {
    notice(`Could not delete: ${err.message}`);
    return;
  }
  saveTabSessions(tabSessions().filter((s) => s.id !== id));
  closeCurrent();
  $("session").hidden = true;
  $("empty").hidden = false;
  history.replaceState(null, "", location.pathname);
  notice(`Deleted session ${id}.`, "info");
  refreshSessions();
}

async function loadConfig() {
  try {
    const res = await fetch("/console/config.json");
    if (res.ok) config = await res.json();
  } catch {
    /* another server: no scenario list */
  }
  $("agent-kind").textContent = config.agent ? `agent: ${config.agent}` : "";
  if (config.agent === "replay" && Array.isArray(config.scenarios)) {
    const select = $("create-scenario");
    for (const name of config.scenarios) {
      // The synthetic `stream:N[:ms[:bytes]]` is a pattern: offer one long stream instead.
      const value = name.startsWith("stream:") ? "stream:200:50" : name;
      const option = document.createElement("option");
      option.value = value;
      option.textContent = value === name ? name : `${value} (200 messages, 50 ms apart)`;
      if (value === "echo") option.selected = true;
      select.append(option);
    }
    $("scenario-row").hidden = false;
    $("model-label").textContent = "or scenario by name";
    $("create-model").placeholder = "e.g. stream:60:50";
  }
}

function init() {
  $("token").value = store.getItem(TOKEN_KEY) || "";
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    store.setItem(TOKEN_KEY, $("token").value.trim());
    notice("Token saved for this tab.", "info");
    refreshSessions();
    if (current) openSession(current.id);
  });
  $("create-form").addEventListener("submit", createSession);
  $("composer").addEventListener("submit", sendMessage);
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    } else if (event.key === "Escape" && current && current.transcript.turnOpen) {
      event.preventDefault();
      control({ type: "interrupt" }, "interrupt sent");
    }
  });
  $("interrupt").addEventListener("click", () => control({ type: "interrupt" }, "interrupt sent"));
  $("model-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const model = $("model-input").value.trim();
    control({ type: "set_model", model: model || null }, `model set to ${model || "the default"}`);
  });
  $("mode-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const mode = $("mode-select").value;
    control({ type: "set_permission_mode", mode }, `permission mode set to ${mode}`);
  });
  $("delete").addEventListener("click", deleteSession);
  $("fork-session").addEventListener("click", () => current && forkSession(current.id, null));
  tray.wire($("attach-input"), $("composer"));
  $("refresh-sessions").addEventListener("click", refreshSessions);
  loadConfig().then(() => {
    document.body.dataset.ready = "true";
  });
  refreshSessions();
  const id = decodeURIComponent(location.hash.slice(1));
  if (id) openSession(id);
}

init();
