// A Server-Sent Events parser fed with decoded text chunks (the fetch-based reader needs one:
// EventSource cannot send the Authorization header). Same rules as @agent-webkit/core 0.2.0.

export class SseParser {
  constructor() {
    this.buffer = "";
    this.current = { data: [] };
  }

  // Feeds a chunk; returns the events it completed ({event, id, data}).
  feed(chunk) {
    this.buffer += chunk;
    const out = [];
    for (;;) {
      const nl = this.buffer.indexOf("\n");
      if (nl === -1) break;
      let line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        const cur = this.current;
        if (cur.data.length > 0 || cur.event !== undefined || cur.id !== undefined) {
          out.push({ event: cur.event ?? "message", id: cur.id, data: cur.data.join("\n") });
        }
        this.current = { data: [] };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.current.event = value;
      else if (field === "data") this.current.data.push(value);
      else if (field === "id") this.current.id = value;
    }
    return out;
  }
}
