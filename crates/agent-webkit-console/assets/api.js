// The wire protocol over fetch: JSON requests, and a session stream that reconnects by itself
// with Last-Event-ID. Nothing here knows about the page.

import { SseParser } from "./sse.js";

// A stream silent this long (three keepalive intervals of the default 15 s) is presumed dead.
const SILENCE_MS = 45000;

export class ApiError extends Error {
  constructor(status, detail, code) {
    super(code ? `${detail} (${status} ${code})` : `${detail} (${status})`);
    this.status = status;
    this.detail = detail;
    this.code = code;
  }
}

export class Api {
  // token(): the bearer token to send, or "".
  constructor(token) {
    this.token = token;
  }

  headers(extra) {
    const h = { ...extra };
    const token = this.token();
    if (token) h.authorization = `Bearer ${token}`;
    return h;
  }

  // Returns the parsed JSON body (or null for 204); throws ApiError for any other status.
  async request(method, path, body) {
    const init = { method, headers: this.headers(body === undefined ? {} : { "content-type": "application/json" }) };
    if (body !== undefined) init.body = JSON.stringify(body);
    let res;
    try {
      res = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, `network error: ${err.message}`, "network");
    }
    return this.parse(res);
  }

  // A response's JSON body (null for 204); throws ApiError for a refusal.
  async parse(res) {
    if (res.status === 204) return null;
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!res.ok) {
      throw new ApiError(res.status, (json && json.detail) || text || res.statusText, json && json.code);
    }
    return json;
  }

  createSession(body) {
    return this.request("POST", "/sessions", body);
  }

  // A new session from another one's conversation: all of it, or up to the turn the user
  // message `messageUuid` started. `extra`: other create fields.
  forkSession(sourceId, messageUuid, extra = {}) {
    const fork = { session_id: sourceId };
    if (messageUuid) fork.message_uuid = messageUuid;
    return this.createSession({ ...extra, fork });
  }

  detail(id) {
    return this.request("GET", `/sessions/${encodeURIComponent(id)}`);
  }

  // The context-window usage as the CLI estimates it now.
  context(id) {
    return this.request("GET", `/sessions/${encodeURIComponent(id)}/context`);
  }

  // Uploads one File (or Blob with a name) as the raw body; the server answers
  // {attachment_id, name, size, media_type, path} or a refusal (ApiError with its code).
  async uploadAttachment(id, file) {
    const path = `/sessions/${encodeURIComponent(id)}/attachments?name=${encodeURIComponent(file.name)}`;
    const headers = this.headers({ "content-type": file.type || "application/octet-stream" });
    let res;
    try {
      res = await fetch(path, { method: "POST", headers, body: file });
    } catch (err) {
      throw new ApiError(0, `network error: ${err.message}`, "network");
    }
    return this.parse(res);
  }

  deleteAttachment(id, attachmentId) {
    return this.request("DELETE", `/sessions/${encodeURIComponent(id)}/attachments/${encodeURIComponent(attachmentId)}`);
  }

  input(id, message) {
    return this.request("POST", `/sessions/${encodeURIComponent(id)}/input`, message);
  }

  deleteSession(id) {
    return this.request("DELETE", `/sessions/${encodeURIComponent(id)}`);
  }

  // GET /sessions when the server offers a list: the sessions, or null when it does not.
  async listSessions() {
    let res;
    try {
      res = await fetch("/sessions", { headers: this.headers({ accept: "application/json" }) });
    } catch {
      return null;
    }
    if (res.status === 401) throw new ApiError(401, "Missing or invalid token", "unauthorized");
    if (res.status !== 200) return null;
    const json = await res.json().catch(() => null);
    const items = Array.isArray(json) ? json : json && Array.isArray(json.sessions) ? json.sessions : null;
    if (!items) return null;
    return items.map((item) => ({ ...item, id: item.session_id ?? item.id })).filter((s) => s.id);
  }
}

// Follows one session's stream until `done`, a fatal error, or stop(). Reconnects after a
// dropped connection with Last-Event-ID = the highest seq seen; hands each event to onEvent
// once (an event whose seq is not above the last one is dropped: exactly once on screen).
export class SessionStream {
  constructor(api, id, { onEvent, onState, onFatal }) {
    this.api = api;
    this.id = id;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onFatal = onFatal;
    this.lastSeq = 0;
    this.conn = null;
    this.stopped = false;
    this.reconnects = 0;
  }

  stop() {
    this.stopped = true;
    if (this.conn) this.conn.abort();
  }

  async run() {
    let backoff = 250;
    let attempt = 0;
    while (!this.stopped) {
      this.onState(attempt === 0 ? "connecting" : "reconnecting");
      attempt += 1;
      const headers = this.api.headers({ accept: "text/event-stream" });
      if (this.lastSeq > 0) headers["last-event-id"] = String(this.lastSeq);
      // One controller per connection: stop() aborts it, and so does a silent connection
      // (no byte, not even the 15 s keepalive, for SILENCE_MS), which then reconnects.
      const conn = new AbortController();
      this.conn = conn;
      let res;
      try {
        res = await fetch(`/sessions/${encodeURIComponent(this.id)}/stream`, {
          headers,
          signal: conn.signal,
          cache: "no-store",
        });
      } catch {
        if (this.stopped) return;
        await this.pause(backoff);
        backoff = Math.min(backoff * 2, 8000);
        continue;
      }
      if (!res.ok || !res.body) {
        const text = await res.text().catch(() => "");
        let body = null;
        try {
          body = JSON.parse(text);
        } catch {
          body = null;
        }
        const retryable = res.status >= 500 || res.status === 408 || res.status === 429;
        if (!retryable) {
          this.onState("closed");
          this.onFatal(new ApiError(res.status, (body && body.detail) || text || res.statusText, body && body.code));
          return;
        }
        await this.pause(backoff);
        backoff = Math.min(backoff * 2, 8000);
        continue;
      }
      backoff = 250;
      if (attempt > 1) this.reconnects += 1;
      this.onState("live");
      const ended = await this.read(res.body, conn);
      if (ended || this.stopped) {
        this.onState("closed");
        return;
      }
      this.onState("reconnecting");
      await this.pause(backoff);
    }
  }

  // Reads one response; true once `done` (or an eviction, which ends the stream) arrived.
  async read(body, conn) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    let timer = null;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => conn.abort(), SILENCE_MS);
    };
    try {
      arm();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false;
        arm();
        for (const raw of parser.feed(decoder.decode(value, { stream: true }))) {
          const seq = raw.id !== undefined ? Number(raw.id) : null;
          if (seq !== null) {
            if (seq <= this.lastSeq) continue;
            this.lastSeq = seq;
          }
          let data;
          try {
            data = raw.data === "" ? {} : JSON.parse(raw.data);
          } catch {
            data = { code: "malformed_event", message: `could not parse ${raw.event}` };
            raw.event = "error";
          }
          this.onEvent({ seq, event: raw.event, data });
          if (raw.event === "done") return true;
          if (raw.event === "error" && seq === null && data.code === "evicted") return true;
        }
      }
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
      try {
        reader.releaseLock();
      } catch {
        /* already released */
      }
    }
  }

  pause(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }
}
