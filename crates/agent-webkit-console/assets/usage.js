// The session's context and cost panel: cumulative cost per model (the detail's `cost` when the
// session opens, then every `usage` event after a turn), and the context-window usage on demand
// (GET /sessions/{id}/context). Both are the CLI's estimates, and say so.

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

const usd = (n) => (typeof n === "number" ? `$${n.toFixed(4)}` : "–");
const count = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "–");

export class UsagePanel {
  // parts: {total, models (tbody), contextButton, context}; api: Api.
  constructor(api, parts) {
    this.api = api;
    this.parts = parts;
    this.sessionId = null;
    parts.contextButton.addEventListener("click", () => this.loadContext());
  }

  reset(sessionId) {
    this.sessionId = sessionId;
    this.fromEvents = false;
    this.showCost(null);
    this.parts.context.replaceChildren();
    this.parts.contextButton.disabled = false;
  }

  // cost: {total_cost_usd, by_model: {model: {input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens, cost_usd}}}
  showCost(cost) {
    const { total, models } = this.parts;
    models.replaceChildren();
    if (!cost || typeof cost !== "object") {
      total.textContent = "no cost reported yet";
      total.dataset.usd = "";
      return;
    }
    total.textContent = `${usd(cost.total_cost_usd)} in total (CLI estimate)`;
    total.dataset.usd = String(cost.total_cost_usd ?? "");
    for (const [model, m] of Object.entries(cost.by_model || {})) {
      const row = el("tr");
      row.dataset.model = model;
      row.append(
        el("th", null, model),
        el("td", "num", count(m.input_tokens)),
        el("td", "num", count(m.output_tokens)),
        el("td", "num", count((m.cache_read_input_tokens || 0) + (m.cache_creation_input_tokens || 0))),
        el("td", "num cost", usd(m.cost_usd)),
      );
      models.append(row);
    }
  }

  // The detail's `cost` (when the session opens): unless a `usage` event, newer, came first.
  detailCost(cost) {
    if (!this.fromEvents) this.showCost(cost);
  }

  // A `usage` event: {cost, turn}.
  usage(data) {
    if (!data || !data.cost) return;
    this.fromEvents = true;
    this.showCost(data.cost);
  }

  async loadContext() {
    const id = this.sessionId;
    if (!id) return;
    const box = this.parts.context;
    const button = this.parts.contextButton;
    button.disabled = true;
    box.replaceChildren(el("span", "muted", "asking the agent…"));
    let ctx;
    try {
      ctx = await this.api.context(id);
    } catch (err) {
      if (this.sessionId !== id) return;
      const text = err.code === "unsupported" ? "this agent does not report context usage" : err.message;
      const error = el("span", "error-text", text);
      error.dataset.code = err.code || `http_${err.status}`;
      box.replaceChildren(error);
      return;
    } finally {
      if (this.sessionId === id) button.disabled = false;
    }
    if (this.sessionId !== id || !ctx) return;
    const meter = el("meter");
    meter.min = 0;
    meter.max = ctx.max_tokens || 1;
    meter.value = ctx.total_tokens || 0;
    meter.high = meter.max * 0.8;
    const pct = typeof ctx.percentage === "number" ? `${ctx.percentage.toFixed(1)}%` : "";
    const line = el("div", "context-line", `${count(ctx.total_tokens)} of ${count(ctx.max_tokens)} tokens ${pct}`.trim());
    line.dataset.total = String(ctx.total_tokens ?? "");
    line.dataset.max = String(ctx.max_tokens ?? "");
    const list = el("ul", "context-categories");
    for (const c of ctx.categories || []) {
      if (!c || !c.tokens) continue;
      list.append(el("li", null, `${c.name}: ${count(c.tokens)}`));
    }
    const model = ctx.model ? ` · ${ctx.model}` : "";
    box.replaceChildren(meter, line, list, el("div", "muted", `estimated by the CLI${model}`));
  }
}
