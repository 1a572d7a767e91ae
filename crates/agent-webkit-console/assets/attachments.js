// Attachments of the message being composed: files picked or dropped on the composer are
// uploaded at once (POST /sessions/{id}/attachments?name=…) and shown as chips (name, size,
// remove); a refusal (too large, too many, bad name) shows on its chip with the server's code.
// The message then references the uploaded ones as {"type": "attachment", "attachment_id"}.

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function formatSize(bytes) {
  if (typeof bytes !== "number" || !Number.isFinite(bytes)) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

// What a refusal means to the user, by its code.
function refusal(err) {
  const why = {
    attachment_too_large: "too large",
    too_many_attachments: "too many attachments",
    invalid_attachment_name: "name not allowed",
  }[err.code];
  return why ? `${why}: ${err.detail}` : err.message;
}

export class AttachmentTray {
  // api: Api; chips: the <ul> for the chips; onChange(): called when the set or its state changes.
  constructor(api, chips, onChange = () => {}) {
    this.api = api;
    this.chips = chips;
    this.onChange = onChange;
    this.sessionId = null;
    this.items = []; // {chip, state: "uploading" | "ready" | "refused", attachment}
  }

  // A new session: forgets the previous one's chips (its uploads stay on that session).
  reset(sessionId) {
    this.sessionId = sessionId;
    this.items = [];
    this.chips.replaceChildren();
    this.chips.hidden = true;
    this.onChange();
  }

  get uploading() {
    return this.items.some((i) => i.state === "uploading");
  }

  // The content blocks for the ready attachments.
  blocks() {
    return this.items
      .filter((i) => i.state === "ready")
      .map((i) => ({ type: "attachment", attachment_id: i.attachment.attachment_id }));
  }

  // The uploaded attachments by id (for showing sent messages).
  known() {
    return new Map(this.items.filter((i) => i.state === "ready").map((i) => [i.attachment.attachment_id, i.attachment]));
  }

  // After a send: the chips go (the attachments stay with the session for the agent).
  clearSent() {
    for (const item of this.items.filter((i) => i.state !== "uploading")) item.chip.remove();
    this.items = this.items.filter((i) => i.state === "uploading");
    this.chips.hidden = this.items.length === 0;
    this.onChange();
  }

  async addFiles(files) {
    await Promise.all([...files].map((file) => this.add(file)));
  }

  async add(file) {
    const sessionId = this.sessionId;
    if (!sessionId) return;
    const chip = el("li", "chip uploading");
    chip.dataset.name = file.name;
    const name = el("span", "chip-name", file.name);
    const size = el("span", "chip-size muted", formatSize(file.size));
    const status = el("span", "chip-status", "uploading…");
    const remove = el("button", "chip-remove", "×");
    remove.type = "button";
    remove.title = `Remove ${file.name}`;
    remove.setAttribute("aria-label", `Remove ${file.name}`);
    chip.append(name, " ", size, " ", status, remove);
    const item = { chip, state: "uploading", attachment: null };
    this.items.push(item);
    this.chips.append(chip);
    this.chips.hidden = false;
    remove.addEventListener("click", () => this.remove(item, sessionId));
    this.onChange();
    try {
      const attachment = await this.api.uploadAttachment(sessionId, file);
      if (!this.items.includes(item)) {
        // Removed (or the session left) while uploading: do not leave it on the server.
        this.api.deleteAttachment(sessionId, attachment.attachment_id).catch(() => {});
        return;
      }
      item.state = "ready";
      item.attachment = attachment;
      chip.className = "chip ready";
      chip.dataset.attachmentId = attachment.attachment_id;
      if (attachment.path) chip.title = attachment.path;
      name.textContent = attachment.name || file.name;
      size.textContent = formatSize(attachment.size ?? file.size);
      status.textContent = "";
    } catch (err) {
      if (!this.items.includes(item)) return;
      item.state = "refused";
      chip.className = "chip refused";
      chip.dataset.code = err.code || `http_${err.status}`;
      chip.setAttribute("role", "alert");
      status.textContent = refusal(err);
    }
    this.onChange();
  }

  async remove(item, sessionId) {
    this.items = this.items.filter((i) => i !== item);
    item.chip.remove();
    this.chips.hidden = this.items.length === 0;
    this.onChange();
    if (item.state === "ready") {
      try {
        await this.api.deleteAttachment(sessionId, item.attachment.attachment_id);
      } catch {
        /* already gone with its session; nothing references it */
      }
    }
  }

  // File picker and drag & drop on `zone`.
  wire(input, zone) {
    input.addEventListener("change", () => {
      const files = [...input.files];
      input.value = "";
      this.addFiles(files);
    });
    zone.addEventListener("dragover", (event) => {
      if (!this.sessionId || !event.dataTransfer || ![...event.dataTransfer.types].includes("Files")) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("dropping");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dropping"));
    zone.addEventListener("drop", (event) => {
      zone.classList.remove("dropping");
      if (!this.sessionId || !event.dataTransfer || event.dataTransfer.files.length === 0) return;
      event.preventDefault();
      this.addFiles(event.dataTransfer.files);
    });
  }
}
