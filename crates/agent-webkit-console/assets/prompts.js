// Cards for what the agent asks of the user: a permission request (allow, deny with a
// message, allow with edited input), an AskUserQuestion (single / multi select, free text),
// a hook decision. Each card calls send(message) and shows how the answer went.

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

function json(value) {
  return JSON.stringify(value, null, 2);
}

// The shell shared by every prompt card; returns {card, body, settle}.
function shell(kind, title, correlationId) {
  const card = el("li", `card prompt ${kind}`);
  card.dataset.correlationId = correlationId;
  card.setAttribute("role", "group");
  card.setAttribute("aria-label", title);
  card.append(el("div", "card-title", title));
  const body = el("div", "card-body");
  const status = el("div", "prompt-status");
  status.setAttribute("role", "status");
  card.append(body, status);
  // Runs an answer: disables the card while in flight; on failure re-enables it.
  const settle = async (label, send) => {
    const controls = card.querySelectorAll("button, input, textarea, select");
    controls.forEach((c) => (c.disabled = true));
    status.textContent = "sending…";
    try {
      await send();
      card.classList.add("answered");
      status.textContent = `answered: ${label}`;
    } catch (err) {
      controls.forEach((c) => (c.disabled = false));
      status.textContent = "";
      const error = el("div", "error-text", err.message);
      status.append(error);
    }
  };
  return { card, body, settle };
}

export function permissionCard(data, send) {
  const { card, body, settle } = shell("permission", `Permission: ${data.tool_name}`, data.correlation_id);
  const input = el("pre", "json");
  input.textContent = json(data.input);
  body.append(input);
  const actions = el("div", "actions");
  const allow = button("Allow", "allow primary");
  allow.addEventListener("click", () =>
    settle("allowed", () => send({ type: "permission_response", correlation_id: data.correlation_id, behavior: "allow" })),
  );
  const reason = el("input", "deny-message");
  reason.placeholder = "Reason for denying (optional)";
  reason.setAttribute("aria-label", "Reason for denying");
  const deny = button("Deny", "deny danger");
  deny.addEventListener("click", () => {
    const msg = { type: "permission_response", correlation_id: data.correlation_id, behavior: "deny" };
    if (reason.value.trim()) msg.message = reason.value.trim();
    settle("denied", () => send(msg));
  });
  actions.append(allow, reason, deny);
  const edit = el("details", "edit");
  edit.append(el("summary", null, "Allow with edited input"));
  const editor = el("textarea", "edit-input");
  editor.value = json(data.input);
  editor.rows = Math.min(12, editor.value.split("\n").length + 1);
  editor.setAttribute("aria-label", "Edited tool input (JSON)");
  const allowEdited = button("Allow with this input", "allow-edited");
  const editError = el("div", "error-text");
  allowEdited.addEventListener("click", () => {
    let updated;
    try {
      updated = JSON.parse(editor.value);
    } catch (err) {
      editError.textContent = `not JSON: ${err.message}`;
      return;
    }
    if (!updated || typeof updated !== "object" || Array.isArray(updated)) {
      editError.textContent = "the input must be a JSON object";
      return;
    }
    editError.textContent = "";
    settle("allowed with edited input", () =>
      send({ type: "permission_response", correlation_id: data.correlation_id, behavior: "allow", updated_input: updated }),
    );
  });
  edit.append(editor, allowEdited, editError);
  body.append(actions, edit);
  return card;
}

export function questionCard(data, send) {
  const { card, body, settle } = shell("question", "Question", data.correlation_id);
  const questions = (data.questions && data.questions.questions) || [];
  const readers = [];
  questions.forEach((q, qi) => {
    const set = el("fieldset", "question");
    set.append(el("legend", null, q.header ? `${q.header}: ${q.question}` : q.question));
    const multi = Boolean(q.multiSelect);
    const boxes = [];
    (q.options || []).forEach((opt) => {
      const label = el("label", "option");
      const box = el("input");
      box.type = multi ? "checkbox" : "radio";
      box.name = `q-${data.correlation_id}-${qi}`;
      box.value = opt.label;
      box.dataset.option = opt.label;
      label.append(box, ` ${opt.label}`);
      if (opt.description) label.append(el("span", "muted", ` — ${opt.description}`));
      boxes.push(box);
      set.append(label);
    });
    const other = el("input", "other");
    other.placeholder = "Other (free text)";
    other.setAttribute("aria-label", `Other answer to: ${q.question}`);
    set.append(other);
    readers.push(() => {
      const picked = boxes.filter((b) => b.checked).map((b) => b.value);
      if (other.value.trim()) picked.push(other.value.trim());
      return [q.question, picked.join(", ")];
    });
    body.append(set);
  });
  const submit = button("Answer", "primary answer");
  const error = el("div", "error-text");
  submit.addEventListener("click", () => {
    const answers = Object.fromEntries(readers.map((read) => read()));
    if (Object.values(answers).some((a) => a === "")) {
      error.textContent = "answer every question";
      return;
    }
    error.textContent = "";
    settle(Object.values(answers).join("; "), () =>
      send({ type: "question_response", correlation_id: data.correlation_id, answers }),
    );
  });
  body.append(submit, error);
  return card;
}

export function hookCard(data, send) {
  const { card, body, settle } = shell("hook", `Hook: ${data.hook_event}`, data.correlation_id);
  const input = el("pre", "json");
  input.textContent = json(data.hook_input);
  body.append(input);
  const actions = el("div", "actions");
  const pass = button("No opinion", "primary");
  pass.addEventListener("click", () =>
    settle("no opinion", () => send({ type: "hook_decision_response", correlation_id: data.correlation_id, decision: {} })),
  );
  const reason = el("input", "hook-reason");
  reason.placeholder = "Reason";
  reason.setAttribute("aria-label", "Reason for blocking");
  const block = button(data.hook_event === "PreToolUse" ? "Deny tool" : "Block", "danger");
  block.addEventListener("click", () => {
    const why = reason.value.trim() || "Blocked from the console";
    const decision =
      data.hook_event === "PreToolUse"
        ? { hookSpecificOutput: { hookEventName: "PreToolUse", permissionDecision: "deny", permissionDecisionReason: why } }
        : { decision: "block", reason: why };
    settle("blocked", () => send({ type: "hook_decision_response", correlation_id: data.correlation_id, decision }));
  });
  if (data.hook_event === "PreToolUse") {
    const allow = button("Allow tool");
    allow.addEventListener("click", () =>
      settle("allowed", () =>
        send({
          type: "hook_decision_response",
          correlation_id: data.correlation_id,
          decision: { hookSpecificOutput: { hookEventName: "PreToolUse", permissionDecision: "allow" } },
        }),
      ),
    );
    actions.append(allow);
  }
  actions.append(pass, reason, block);
  body.append(actions);
  return card;
}
