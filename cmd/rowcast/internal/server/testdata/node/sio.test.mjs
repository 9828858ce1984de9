// The Socket.IO transport against the real socket.io-client (issue 5's nine
// cases, issue 8's polling cases 10 and 11, issue 13's per-user limit 12),
// on a relay capturing a real PostgreSQL. Each test uses its own teams and
// users, so the tests do not see each other's events.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { createHmac } from "node:crypto";
import { WebSocket } from "ws";
import {
  HEARTBEAT_MS,
  Recorder,
  SESSIONS_PER_USER,
  URL,
  WS_ONLY_URL,
  client,
  db,
  defaultClient,
  ensure,
  next,
  rawSocket,
  sign,
  token,
  within,
} from "./lib.mjs";

after(() => db.end());

// frameAnsweringPings returns the next frame that is not a ping, answering
// the pings on the way as a client must.
async function frameAnsweringPings(ws) {
  for (;;) {
    const f = await ws.frame(HEARTBEAT_MS * 3);
    if (f !== "2") return f;
    ws.send("3");
  }
}

test("1. the open packet has exactly the Engine.IO fields; a 3 answers each 2 and the connection stays up", async (t) => {
  const ws = await rawSocket(t);
  const open = await ws.frame();
  assert.equal(open[0], "0", `first frame ${open}`);
  const o = JSON.parse(open.slice(1));
  assert.deepEqual(Object.keys(o), ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]);
  assert.equal(typeof o.sid, "string");
  assert.ok(o.sid.length > 0);
  assert.deepEqual(o.upgrades, []);
  assert.equal(o.pingInterval, HEARTBEAT_MS);
  assert.ok(Number.isInteger(o.pingTimeout) && o.pingTimeout > 0, `pingTimeout ${o.pingTimeout}`);
  assert.ok(Number.isInteger(o.maxPayload) && o.maxPayload >= 2048, `maxPayload ${o.maxPayload}`);

  // Answer every ping for twice pingInterval + pingTimeout.
  const start = Date.now();
  let pings = 0;
  while (Date.now() - start < 2 * (o.pingInterval + o.pingTimeout)) {
    const f = await ws.frame(o.pingInterval + o.pingTimeout + 2000);
    assert.equal(f, "2", `only pings before CONNECT, got ${f}`);
    pings++;
    ws.send("3");
  }
  assert.ok(pings >= 2, `${pings} pings`);
  assert.equal(ws.readyState, WebSocket.OPEN);
  // Still a working Socket.IO connection.
  ws.send("40" + JSON.stringify({ token: token(10, [10]) }));
  const reply = await frameAnsweringPings(ws);
  assert.match(reply, /^40\{"sid":"[^"]+","pid":"[^"]+"\}$/);
});

test("2. EIO=3, transport=polling (with sessions.sio_polling off), a malformed packet and a client-sent 2 are refused as the reference server refuses them", async (t) => {
  for (const query of ["EIO=4&transport=polling&t=abc", "EIO=3&transport=polling&t=abc"]) {
    const res = await fetch(`${WS_ONLY_URL}/socket.io/?${query}`);
    assert.equal(res.status, 400, query);
    assert.equal(res.headers.get("content-type"), "application/json", query);
    assert.deepEqual(await res.json(), { code: 0, message: "Transport unknown" }, query);
  }

  const eio3 = new WebSocket(URL.replace(/^http/, "ws") + "/socket.io/?EIO=3&transport=websocket");
  eio3.on("error", () => {});
  t.after(() => eio3.terminate());
  const [, res] = await next(eio3, "unexpected-response");
  assert.equal(res.statusCode, 400);
  let body = "";
  for await (const chunk of res) body += chunk;
  assert.deepEqual(JSON.parse(body), { code: 5, message: "Unsupported protocol version" });

  for (const bad of ["4x", "42{\"not\":\"an array\"}", "42[\"disconnect\"]", "9"]) {
    const ws = await rawSocket(t);
    assert.equal((await ws.frame())[0], "0");
    ws.send(bad);
    assert.equal(await ws.closed(), 1005, `malformed ${bad}: a close without status`);
  }

  const ws = await rawSocket(t);
  assert.equal((await ws.frame())[0], "0");
  ws.send("2");
  assert.equal(await ws.closed(), 1005, "a client ping closes (heartbeats go server to client in EIO 4)");
});

test("3. a CONNECT carrying a 2 KB token succeeds", async (t) => {
  const tok = token(30, [30], { profile: "x".repeat(1600) });
  assert.ok(tok.length >= 2048, `token is ${tok.length} bytes`);
  const socket = client(t, { auth: { token: tok } });
  await next(socket, "connect");
  assert.ok(socket.id);
});

test("4. auth {token} connects with an id and recovered false; an auth callback runs on every reconnect", async (t) => {
  const plain = client(t, { auth: { token: token(40, [40]) } });
  await next(plain, "connect");
  assert.equal(typeof plain.id, "string");
  assert.ok(plain.id.length > 0);
  assert.equal(plain.recovered, false);

  let calls = 0;
  const socket = client(t, {
    auth: (cb) => {
      calls++;
      cb({ token: token(40, [40]) });
    },
  });
  await next(socket, "connect");
  assert.equal(calls, 1);
  const id = socket.id;
  for (let i = 2; i <= 3; i++) {
    const reconnected = next(socket, "connect");
    socket.io.engine.close(); // the transport, not the server
    await reconnected;
    assert.equal(calls, i, "the auth callback ran for the reconnect");
    assert.equal(socket.recovered, true);
    assert.equal(socket.id, id, "a recovered session keeps its id");
  }
});

test("5. a wrong token: connect_error unauthorized, socket inactive, no reconnect attempt", async (t) => {
  const forged = createHmac("sha256", "not-the-secret").update("x").digest("base64url");
  for (const bad of [sign({ sub: "50", teamId: [50] }).replace(/[^.]+$/, forged), "not-a-jwt"]) {
    const socket = client(t, { auth: { token: bad } });
    let attempts = 0;
    socket.io.on("reconnect_attempt", () => attempts++);
    socket.on("connect", () => assert.fail("connected with a wrong token"));
    const [err] = await next(socket, "connect_error");
    assert.equal(err.message, "unauthorized");
    assert.equal(socket.active, false);
    // Longer than the client's reconnection delay (100-300ms): none came.
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(attempts, 0);
    assert.equal(socket.connected, false);
  }
});

test("6. SQL writes arrive in order as Socket.IO events; onAny sees them; another team's client sees none", async (t) => {
  await ensure({ teams: [60, 62], users: [60, 62] });
  const a = client(t, { auth: { token: token(60, [60]) } });
  const b = client(t, { auth: { token: token(62, [62]) } });
  const ra = new Recorder(a);
  const rb = new Recorder(b);
  const updated = [];
  a.on("escrow:updated", (d) => updated.push(d));
  await Promise.all([next(a, "connect"), next(b, "connect")]);

  const esc = (
    await db.query(
      `insert into escrows (team_id, property_address, city, state, zip_code, purchase_price, updated_by)
       values (60, '1 Main St', 'Austin', 'TX', '78701', 100000, 60) returning id`,
    )
  ).rows[0].id;
  await db.query("update escrows set status = 'closed' where id = $1", [esc]);
  const lead = (await db.query("insert into leads (team_id, first_name) values (60, 'Lee') returning id")).rows[0].id;
  await db.query("delete from leads where id = $1", [lead]);
  const task = (
    await db.query(
      "insert into ai_tasks (user_id, team_id, task_type, status) values (60, 60, 'summarize', 'running') returning id",
    )
  ).rows[0].id;
  await db.query("update ai_tasks set progress = 40, message = 'halfway' where id = $1", [task]);

  await ra.count(6);
  assert.deepEqual(ra.names(), [
    "escrow:created",
    "escrow:updated",
    "lead:created",
    "lead:deleted",
    "ai:task:started",
    "ai:task:progress",
  ]);
  for (const e of ra.events) {
    assert.equal(typeof e.data, "object", `${e.name}: data is an object`);
    assert.match(e.offset, /^p2\./, `${e.name}: the trailing offset is a position`);
    assert.equal(e.extra, 0, `${e.name}: no argument after the offset`);
  }
  assert.equal(updated.length, 1);
  const u = updated[0];
  assert.equal(u.entityType, "escrow");
  assert.equal(u.action, "updated");
  assert.equal(u.escrowId, String(esc));
  assert.equal(u.teamId, "60");
  assert.deepEqual(u.changes, { status: "closed" });
  const progress = ra.events[5].data;
  assert.equal(progress.taskId, task);
  assert.equal(progress.progress, 40);

  // The other team's first event is its own marker: it saw none of the above.
  await db.query("insert into leads (team_id, first_name) values (62, 'marker')");
  await rb.count(1);
  assert.deepEqual(rb.names(), ["lead:created"]);
  assert.equal(rb.events[0].data.teamId, "62");
  assert.equal(rb.events[0].data.lead.first_name, "marker");
});

test("7. the transport is killed while writes continue: recovered, each missed event once and in order", async (t) => {
  await ensure({ teams: [70, 72], users: [70] });
  const rows = [];
  for (const team of [70, 72]) {
    for (let i = 0; i < 4; i++) {
      const { rows: r } = await db.query(
        `insert into escrows (team_id, property_address, city, state, zip_code, purchase_price)
         values ($1, 'hot', 'Austin', 'TX', '1', 1) returning id`,
        [team],
      );
      rows.push(String(r[0].id));
    }
  }
  const bump = (c, id) => c.query("update escrows set version = version + 1 where id = $1", [id]);

  let authCalls = 0;
  const socket = client(t, {
    auth: async (cb) => {
      authCalls++;
      if (authCalls > 1) {
        // Reconnecting: this change lands while the client is away.
        await bump(db, rows[0]);
      }
      cb({ token: token(70, [70, 72]) });
    },
  });
  const seen = new Map(rows.map((id) => [id, []]));
  socket.on("escrow:updated", (d) => {
    if (d.changes.version !== undefined) seen.get(d.entityId)?.push(d.changes.version);
  });
  const rec = new Recorder(socket);
  await next(socket, "connect");
  let atDisconnect = -1;
  let atConnect = -1;
  socket.on("disconnect", () => (atDisconnect = rec.events.length));
  const reconnected = new Promise((resolve) =>
    socket.on("connect", () => {
      atConnect = rec.events.length;
      resolve();
    }),
  );

  // 4 writers, 40 transactions each: some touch two rows (of either team),
  // some sleep holding a row lock, some roll back.
  const writers = 4;
  const perWriter = 40;
  let done = 0;
  let killed = false;
  const writer = async (w) => {
    let seed = w * 7919 + 1;
    const rnd = (n) => ((seed = (seed * 48271) % 2147483647) % n);
    for (let i = 0; i < perWriter; i++) {
      let [x, y] = [rows[rnd(rows.length)], rows[rnd(rows.length)]];
      if (Number(y) < Number(x)) [x, y] = [y, x];
      const c = await db.connect();
      try {
        await c.query("begin");
        await bump(c, x);
        if (rnd(4) === 0) await c.query("select pg_sleep(0.005)");
        if (rnd(3) === 0 && x !== y) await bump(c, y);
        await c.query(rnd(8) === 0 ? "rollback" : "commit");
      } finally {
        c.release();
      }
      if (++done === (writers * perWriter) / 2 && !killed) {
        killed = true;
        const ws = socket.io.engine.transport.ws;
        ws.terminate(); // a dropped connection: no close frame
      }
    }
  };
  await Promise.all(Array.from({ length: writers }, (_, w) => writer(w)));
  await within(reconnected, 20000, "the reconnect");
  assert.ok(killed);
  assert.equal(socket.recovered, true, "the session was recovered");
  assert.ok(authCalls >= 2);
  assert.ok(atConnect > atDisconnect, `events missed while away were replayed (${atDisconnect} → ${atConnect})`);

  const final = new Map(
    (await db.query("select id::text, version from escrows where id = any($1::bigint[])", [rows])).rows.map((r) => [
      r.id,
      r.version,
    ]),
  );
  await rec.until(
    () => rows.every((id) => seen.get(id).length >= final.get(id) - 1),
    "every final version",
    30000,
  );
  for (const id of rows) {
    const want = Array.from({ length: final.get(id) - 1 }, (_, k) => k + 2);
    assert.deepEqual(seen.get(id), want, `escrow ${id}: versions 2..${final.get(id)}, in order, once each`);
  }
});

test("8. token expiry closes the transport; the client reconnects with a fresh token and is recovered", async (t) => {
  await ensure({ teams: [80] });
  let calls = 0;
  const socket = client(t, {
    auth: async (cb) => {
      calls++;
      if (calls === 1) {
        return cb({ token: token(80, [80], { exp: Math.floor(Date.now() / 1000) + 2 }) });
      }
      await db.query("insert into leads (team_id, first_name) values (80, 'while away')");
      cb({ token: token(80, [80]) });
    },
  });
  const rec = new Recorder(socket);
  await next(socket, "connect");
  assert.equal(socket.recovered, false);
  await db.query("insert into leads (team_id, first_name) values (80, 'before')");
  await rec.count(1);

  const [reason] = await next(socket, "disconnect", 10000);
  assert.equal(reason, "transport close", "the transport was closed, not the Socket.IO session");
  await next(socket, "connect", 10000);
  assert.equal(calls, 2, "the auth callback gave a fresh token");
  assert.equal(socket.recovered, true);
  await rec.count(2);
  assert.deepEqual(
    rec.events.map((e) => e.data.lead.first_name),
    ["before", "while away"],
  );
  assert.notEqual(rec.events[0].offset, rec.events[1].offset);
});

test("9. a client that is not websocket-only connects with tryAllTransports (with sessions.sio_polling off)", async (t) => {
  const socket = client(
    t,
    {
      transports: ["polling", "websocket"],
      tryAllTransports: true,
      auth: { token: token(90, [90]) },
    },
    WS_ONLY_URL,
  );
  await next(socket, "connect");
  assert.equal(socket.io.engine.transport.name, "websocket");
});

// awayAuth returns an auth callback for user in teams that, from the second
// call on (a reconnect), first writes a lead named "while away <n>" for
// team: a change the client misses while its transport is down.
function awayAuth(user, team) {
  const auth = async (cb) => {
    auth.calls++;
    if (auth.calls > 1) {
      await db.query("insert into leads (team_id, first_name) values ($1, $2)", [team, `while away ${auth.calls}`]);
    }
    cb({ token: token(user, [team]) });
  };
  auth.calls = 0;
  return auth;
}

test("10. default options: starts on polling, upgrades to websocket, receives events, recovers after a dropped transport", async (t) => {
  await ensure({ teams: [100], users: [100] });
  const auth = awayAuth(100, 100);
  const socket = defaultClient(t, { auth });
  const rec = new Recorder(socket);
  let first;
  const upgraded = new Promise((resolve) =>
    socket.io.once("open", () => {
      first = socket.io.engine.transport.name;
      socket.io.engine.once("upgrade", resolve);
    }),
  );
  await next(socket, "connect");
  assert.equal(socket.recovered, false);
  await within(upgraded, 10000, "the upgrade");
  assert.equal(first, "polling", "the client started on polling");
  assert.equal(socket.io.engine.transport.name, "websocket");

  await db.query("insert into leads (team_id, first_name) values (100, 'upgraded')");
  await rec.count(1);

  const reconnected = next(socket, "connect", 15000);
  socket.io.engine.transport.ws.terminate(); // a dropped connection: no close frame
  await reconnected;
  assert.equal(auth.calls, 2);
  assert.equal(socket.recovered, true, "the session was recovered");
  await rec.count(2);
  assert.deepEqual(
    rec.events.map((e) => e.data.lead.first_name),
    ["upgraded", "while away 2"],
  );
  // Still live after the recovery.
  await db.query("insert into leads (team_id, first_name) values (100, 'after')");
  await rec.count(3);
  assert.equal(rec.events[2].data.lead.first_name, "after");
});

test("11. transports: ['polling'] receives events and recovers after its transport closed", async (t) => {
  await ensure({ teams: [110], users: [110] });
  const auth = awayAuth(110, 110);
  const socket = defaultClient(t, { transports: ["polling"], auth });
  const rec = new Recorder(socket);
  await next(socket, "connect");
  assert.equal(socket.io.engine.transport.name, "polling");
  await db.query("insert into leads (team_id, first_name) values (110, 'polled 1')");
  await db.query("insert into leads (team_id, first_name) values (110, 'polled 2')");
  await rec.count(2);

  const reconnected = next(socket, "connect", 15000);
  socket.io.engine.close(); // the transport, not the Socket.IO session
  await reconnected;
  assert.equal(auth.calls, 2);
  assert.equal(socket.recovered, true, "the session was recovered");
  assert.equal(socket.io.engine.transport.name, "polling");
  await rec.count(3);
  assert.deepEqual(
    rec.events.map((e) => e.data.lead.first_name),
    ["polled 1", "polled 2", "while away 2"],
  );
  const offsets = rec.events.map((e) => e.offset);
  assert.equal(new Set(offsets).size, 3, "each event has its own offset");
});

test("12. a user at limits.sessions_per_user: connect_error 'too many sessions', socket inactive, no reconnect attempt", async (t) => {
  const open = [];
  for (let i = 0; i < SESSIONS_PER_USER; i++) {
    const s = client(t, { auth: { token: token(120, [120]) } });
    open.push(next(s, "connect"));
  }
  await Promise.all(open);
  const socket = client(t, { auth: { token: token(120, [120]) } });
  let attempts = 0;
  socket.io.on("reconnect_attempt", () => attempts++);
  socket.on("connect", () => assert.fail("connected past the limit"));
  const [err] = await next(socket, "connect_error");
  assert.equal(err.message, "too many sessions");
  assert.equal(socket.active, false);
  // Longer than the client's reconnection delay (100-300ms): none came.
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(attempts, 0);
  assert.equal(socket.connected, false);
  // Another user is not affected.
  const other = client(t, { auth: { token: token(121, [120]) } });
  await next(other, "connect");
});
