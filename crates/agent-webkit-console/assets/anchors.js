// What can be done from a user message the agent has anchored (its `user_message` event gave it
// a uuid): fork a new session from there, or rewind files and conversation to just before it.
// A rewind is a dry run first: the panel lists the files that would change and what cannot be
// restored, and only "Rewind" does it.

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(label, cls) {
  const b = el("button", cls, label);
  b.type = "button";
  return b;
}

// The text of a user message's content (a string, or content blocks).
export function contentText(content) {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content
    .filter((b) => b && b.type === "text" && typeof b.text === "string")
    .map((b) => b.text)
    .join("\n");
}

// Adds the actions to a user message item. handlers: {fork(uuid), dryRun(uuid, files),
// rewind(uuid, files) → the answer}; both rewind calls post the `rewind` input and return its
// answer or throw ApiError.
export function anchorActions(item, uuid, handlers) {
  if (item.querySelector(".anchor-actions")) return;
  const actions = el("div", "anchor-actions");
  const fork = button("Fork from here", "small fork-here");
  fork.title = "A new session with the conversation up to this message's answer";
  const rewind = button("Rewind to here", "small rewind-here");
  rewind.title = "Restore files and conversation to just before this message";
  actions.append(fork, rewind);
  item.append(actions);
  fork.addEventListener("click", async () => {
    fork.disabled = true;
    try {
      await handlers.fork(uuid);
    } finally {
      fork.disabled = false;
    }
  });
  rewind.addEventListener("click", () => openRewind(item, uuid, handlers, rewind));
}

async function openRewind(item, uuid, handlers, opener) {
  let panel = item.querySelector(".rewind-panel");
  if (panel) panel.remove();
  panel = el("div", "rewind-panel");
  panel.setAttribute("role", "group");
  panel.setAttribute("aria-label", "Rewind");
  const status = el("div", "rewind-status", "Checking what a rewind would change…");
  status.setAttribute("role", "status");
  panel.append(el("div", "card-title", "Rewind to just before this message?"), status);
  item.append(panel);
  opener.disabled = true;
  const close = () => {
    panel.remove();
    opener.disabled = false;
  };
  let files = true;
  let plan;
  try {
    try {
      plan = await handlers.dryRun(uuid, true);
    } catch (err) {
      if (err.code !== "checkpointing_disabled") throw err;
      // Files cannot be restored in this session; the conversation still can.
      files = false;
      plan = await handlers.dryRun(uuid, false);
    }
  } catch (err) {
    status.replaceChildren(refusalText(err));
    const cancel = button("Close", "small rewind-cancel");
    cancel.addEventListener("click", close);
    panel.append(cancel);
    return;
  }
  status.replaceChildren();
  const body = el("div", "rewind-plan");
  if (!files) {
    body.append(el("p", "warn", "File checkpointing is off for this session: files will not be restored, only the conversation."));
  } else {
    const changed = (plan.files && plan.files.files_changed) || [];
    if (changed.length === 0) {
      body.append(el("p", "rewind-files-none", "No file edits to restore."));
    } else {
      const { insertions = 0, deletions = 0 } = plan.files;
      body.append(el("p", null, `Files that will be restored (+${insertions} −${deletions}):`));
      const list = el("ul", "rewind-files");
      for (const path of changed) list.append(el("li", null, path));
      body.append(list);
    }
  }
  if (plan.files && plan.files.error) body.append(el("p", "warn rewind-files-error", `Files: ${plan.files.error}`));
  body.append(el("p", null, "This message and everything after it leave the conversation; its text comes back to the composer."));
  if (plan.not_restored) body.append(el("p", "warn rewind-not-restored", plan.not_restored));
  const actions = el("div", "actions");
  const confirm = button("Rewind", "danger rewind-confirm");
  const cancel = button("Cancel", "rewind-cancel");
  actions.append(confirm, cancel);
  panel.append(body, actions);
  cancel.addEventListener("click", close);
  confirm.addEventListener("click", async () => {
    confirm.disabled = true;
    cancel.disabled = true;
    status.textContent = "rewinding…";
    try {
      await handlers.rewind(uuid, files);
      close();
    } catch (err) {
      status.replaceChildren(refusalText(err));
      cancel.disabled = false;
    }
  });
  confirm.focus();
}

function refusalText(err) {
  const text =
    err.code === "turn_running"
      ? `A turn is running: wait for it to end (or interrupt it), then rewind. (${err.message})`
      : `Cannot rewind: ${err.message}`;
  const node = el("span", "error-text", text);
  node.dataset.code = err.code || `http_${err.status}`;
  return node;
}
