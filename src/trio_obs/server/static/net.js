// Talking to the server: GETs that carry the token, the events route, and LiveSocket, a
// WebSocket that resumes where it left off after any disconnect. Socket messages are
// handled in short slices (the inbox pump), so a burst never makes one long task.

import { state } from "./state.js";
import { authRequired } from "./token.js";

export class HttpStatusError extends Error {
  constructor(path, status) {
    super(`${path.split("?")[0]}: HTTP ${status}`);
    this.status = status;
  }
}

export async function api(path) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const res = await fetch(path, { headers, cache: "no-store" });
  if (!res.ok) {
    if (res.status === 401) authRequired();
    throw new HttpStatusError(path, res.status);
  }
  return res.json();
}

export const eventsPath = (id, since, limit) =>
  `/api/executions/${encodeURIComponent(id)}/events?since=${since}&limit=${limit}`;

function wsUrl(stream, since, epoch) {
  const q = new URLSearchParams({ observability: stream });
  if (since !== null && since !== undefined) q.set("since", String(since));
  if (epoch) q.set("epoch", epoch);
  // A browser WebSocket cannot send an Authorization header.
  if (state.token) q.set("token", state.token);
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}/ws?${q}`;
}

export const sleep = (t) => new Promise((r) => setTimeout(r, t));

let readyCheck = null;
/** Wait until the server answers HTTP; false if it wants a (new) token (the form is shown). */
function serverReady() {
  readyCheck ??= (async () => {
    for (let delay = 250; !state.authBlocked; delay = Math.min(delay * 2, 4000)) {
      try {
        const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
        const res = await fetch("/api/executions?limit=1", { headers, cache: "no-store" });
        if (res.status === 401) {
          authRequired();
          return false;
        }
        return true;
      } catch {
        await sleep(delay); // down: try again
      }
    }
    return false;
  })().finally(() => {
    readyCheck = null;
  });
  return readyCheck;
}

// Socket messages are queued as they arrive and handled in slices of at most SLICE_MS, in
// tasks of their own: a burst of thousands of frames never makes one long task, and the
// browser's socket drains at once (the server sees a fast reader).
const SLICE_MS = 8;
const inbox = []; // handler, data, handler, data…
let inboxHead = 0;
let pumping = false;
const pumpChannel = new MessageChannel();
pumpChannel.port1.onmessage = pump;

function enqueue(handler, data) {
  inbox.push(handler, data);
  if (!pumping) {
    pumping = true;
    pumpChannel.port2.postMessage(0);
  }
}

function pump() {
  const deadline = performance.now() + SLICE_MS;
  let i = inboxHead;
  while (i < inbox.length) {
    const [handler, data] = [inbox[i], inbox[i + 1]];
    inbox[i] = inbox[i + 1] = undefined;
    i += 2;
    try {
      handler(data);
    } catch (err) {
      console.warn("trio-obs: a message could not be handled:", err);
    }
    if ((i & 63) === 0 && performance.now() > deadline) break;
  }
  if (i >= inbox.length) {
    inbox.length = 0;
    inboxHead = 0;
    pumping = false;
  } else {
    inboxHead = i;
    if (inboxHead > 65536) {
      inbox.splice(0, inboxHead);
      inboxHead = 0;
    }
    pumpChannel.port2.postMessage(0);
  }
}

/**
 * A WebSocket that reconnects with backoff (0.5 s doubling to 5 s) whatever the close code
 * (4008 slow consumer, 1001 server restart, network loss), asking for `since=<last seq>`
 * (and the epoch it was given) so the server replays exactly what was missed.
 */
export class LiveSocket {
  constructor(stream, handlers) {
    Object.assign(this, { stream, ...handlers });
    this.delay = 500;
    this.closed = false;
    this.unacked = 0; // subscribe/unsubscribe messages the server has not answered yet
    this.timer = null;
    this.epoch = null;
    this.closes = []; // close codes seen (the latest 20), for diagnostics
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const askedEpoch = this.epoch; // the history we resume; a reset says it is gone
    const ws = (this.ws = new WebSocket(wsUrl(this.stream, this.since(), askedEpoch)));
    this.unacked = 0;
    const handle = (data) => {
      if (this.closed) return;
      let msg;
      try {
        msg = JSON.parse(data);
      } catch {
        return;
      }
      if (typeof msg.seq === "number") {
        this.onEvent(msg);
        return;
      }
      switch (msg.type) {
        case "observability:connected":
          this.delay = 500; // only a real handshake resets the backoff
          if (typeof msg.epoch === "string" && msg.epoch) this.epoch = msg.epoch;
          this.onState("live");
          this.onConnected?.(this, msg);
          break;
        case "observability:reset":
          if (typeof msg.epoch === "string" && msg.epoch) this.epoch = msg.epoch;
          this.onReset?.(msg, askedEpoch);
          break;
        case "observability:subscribed":
        case "observability:unsubscribed":
          this.unacked = Math.max(0, this.unacked - 1);
          break;
        case "pong":
          this.onPong?.();
          break;
        case "observability:error":
          this.unacked = Math.max(0, this.unacked - 1);
          console.warn("trio-obs:", msg.error, msg.code);
          break;
        default:
      }
    };
    ws.onmessage = (m) => enqueue(handle, m.data);
    // In the same queue as the messages: a reconnect asks for since=<last seq handled>.
    ws.onclose = (e) => enqueue(onclose, e);
    const onclose = (e) => {
      if (this.closed || ws !== this.ws) return;
      this.closes.push(e.code);
      if (this.closes.length > 20) this.closes.shift();
      this.onState("reconnecting", `closed ${e.code} ${e.reason ?? ""}`.trim());
      // 4008: the server is up and we fell behind: back at once, since=<last seq>. Else
      // back off, with jitter, so that many viewers of a restarted server do not all
      // return at once.
      const behind = e.code === 4008;
      const wait = behind ? 20 : this.delay * (0.8 + 0.4 * Math.random());
      if (!behind) this.delay = Math.min(this.delay * 2, 5000);
      this.timer = setTimeout(async () => {
        // Ask over HTTP first: a handshake refused for its token shows only as 1006, and a
        // failed handshake makes the browser log its URL (which holds the token).
        if ((await serverReady()) && !this.closed) this.connect();
      }, wait);
    };
  }

  send(obj) {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify(obj));
    if (obj.action) this.unacked += 1;
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws.close(1000);
  }
}
