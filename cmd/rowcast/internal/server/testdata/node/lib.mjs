// Helpers for the Socket.IO end-to-end suite. The Go test that runs it
// (cmd/rowcast/internal/server/node_test.go) starts a relay on a fresh demo CRM
// database and passes:
//
//   ROWCAST_URL           http://host:port of the relay
//   ROWCAST_WS_ONLY_URL   http://host:port of a relay with sessions.sio_polling off
//   ROWCAST_JWT_SECRET    the HS256 secret the relay verifies tokens with
//   ROWCAST_DATABASE_URL  the demo CRM database the relay captures
//   ROWCAST_HEARTBEAT_MS  the relay's heartbeat (Socket.IO pingInterval)
//   ROWCAST_SESSIONS_PER_USER  the relay's limits.sessions_per_user

import { createHmac } from "node:crypto";
import { once } from "node:events";
import pg from "pg";
import { io } from "socket.io-client";

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this suite through go test ./relay/transport/sio`);
  return v;
}

export const URL = env("ROWCAST_URL");
export const WS_ONLY_URL = env("ROWCAST_WS_ONLY_URL");
export const SECRET = env("ROWCAST_JWT_SECRET");
export const HEARTBEAT_MS = Number(env("ROWCAST_HEARTBEAT_MS"));
export const SESSIONS_PER_USER = Number(env("ROWCAST_SESSIONS_PER_USER"));
export const db = new pg.Pool({ connectionString: env("ROWCAST_DATABASE_URL"), max: 8 });

const b64url = (b) => Buffer.from(b).toString("base64url");

// sign returns an HS256 JWT; exp defaults to an hour from now.
export function sign(claims) {
  const body = { exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" })) + "." + b64url(JSON.stringify(body));
  return head + "." + createHmac("sha256", SECRET).update(head).digest("base64url");
}

// token signs a token for a user in some teams (claims sub and teamId).
export const token = (user, teams, extra = {}) => sign({ sub: String(user), teamId: teams, ...extra });

// ensure creates the teams and users a test writes rows for.
export async function ensure({ teams = [], users = [] }) {
  for (const t of teams) {
    await db.query("insert into teams (id, name) values ($1, $2) on conflict do nothing", [t, `team ${t}`]);
  }
  for (const u of users) {
    await db.query("insert into users (id, email, full_name) values ($1, $2, $3) on conflict do nothing", [
      u,
      `user${u}@example.test`,
      `User ${u}`,
    ]);
  }
}

// client opens a socket.io-client connection to the relay (url, default
// URL), websocket only unless opts says otherwise, with quick reconnects. It
// is closed when the test ends.
export function client(t, opts = {}, url = URL) {
  return defaultClient(t, { transports: ["websocket"], ...opts }, url);
}

// defaultClient opens a socket.io-client connection with the client's
// default transports (polling first, then the upgrade to websocket) and
// quick reconnects. It is closed when the test ends.
export function defaultClient(t, opts = {}, url = URL) {
  const socket = io(url, {
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 300,
    ...opts,
  });
  t.after(() => socket.disconnect());
  return socket;
}

// within rejects when p does not settle within ms.
export function within(p, ms, what) {
  let timer;
  return Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// next resolves with the arguments of emitter's next `event`.
export const next = (emitter, event, ms = 10000) => within(once(emitter, event), ms, event);

// Recorder keeps every event a socket receives (through onAny), in order,
// with its arguments, and lets a test wait for a condition on them.
export class Recorder {
  constructor(socket) {
    this.events = []; // {name, data, offset}
    this.waiters = [];
    socket.onAny((name, data, offset, ...rest) => {
      this.events.push({ name, data, offset, extra: rest.length });
      // After the event's other listeners (onAny ones run first), so a
      // condition on what they recorded sees this event too.
      queueMicrotask(() => this.poke());
    });
  }

  poke() {
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred(this.events)) return true;
      w.resolve(this.events);
      return false;
    });
  }

  // until resolves once pred(events) holds.
  until(pred, what, ms = 15000) {
    return within(
      new Promise((resolve) => {
        this.waiters.push({ pred, resolve });
        this.poke();
      }),
      ms,
      what,
    );
  }

  // count resolves once n events were received.
  count(n, ms) {
    return this.until((evs) => evs.length >= n, `${n} events (have ${this.events.length})`, ms);
  }

  names() {
    return this.events.map((e) => e.name);
  }
}

// rawSocket opens a plain WebSocket to the Socket.IO endpoint (no client
// library) and collects its frames.
export async function rawSocket(t, query = "EIO=4&transport=websocket") {
  const { WebSocket } = await import("ws");
  const ws = new WebSocket(URL.replace(/^http/, "ws") + "/socket.io/?" + query);
  t.after(() => ws.terminate());
  const frames = [];
  const waiters = [];
  const closing = once(ws, "close");
  ws.on("message", (data, isBinary) => {
    frames.push(isBinary ? data : data.toString());
    for (const w of waiters.splice(0)) w();
  });
  ws.frame = async (ms = 5000) => {
    while (frames.length === 0) {
      await within(new Promise((r) => waiters.push(r)), ms, "a frame");
    }
    return frames.shift();
  };
  ws.closed = () => within(closing, 5000, "the close").then(([code]) => code);
  await within(once(ws, "open"), 5000, "the upgrade");
  return ws;
}
