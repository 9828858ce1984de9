-- rowcast schema, version 2. Installed by `rowcast install`; every statement is
-- idempotent, and it upgrades a version 1 schema in place. This file is a
-- text/template: {{"{{"}}.Notify{{"}}"}} switches the writers' doorbell,
-- {{"{{"}}.AllStream{{"}}"}} is relay.AllStream as an SQL literal.
--
-- Ordering design (see docs/design.md, "Order"), PgQ's: capture appends
-- immutable rows to rowcast.changelog, numbered at insert by its identity
-- and stamped with the writing transaction's id; nothing runs at commit. One
-- relay at a time (the ticker, elected by advisory lock) calls rowcast.tick(),
-- which records a snapshot in rowcast.ticks whenever transactions that wrote
-- the changelog became visible since the last one. A tick's batch is the
-- rows of the transactions visible in its snapshot and not in the previous
-- tick's; within it transactions are ordered by the highest id each wrote,
-- and a transaction's rows by id. Every relay reads the same ticks, so the
-- order and the positions are the same on every replica. The order is exact
-- per row: a second writer of a row writes it after the first committed, so
-- its row draws a higher id and lands in the same tick, ordered after the
-- first transaction, or in a later tick.
--
-- Privileges: everything here is owned by the role that runs install (the
-- tables' owner, or a superuser). The capture path (the generated capture
-- and apply functions, ring(), truncated()) is SECURITY DEFINER with a
-- pinned search_path and schema-qualified names, so a role that may write a
-- captured table needs no right on this schema's tables. EXECUTE on every
-- function that writes the changelog is revoked from PUBLIC (a trigger fires
-- without it; without it nobody can attach a capture function to a table of
-- their own, or call an apply function to forge a change). Only set_actor,
-- set_request_id and the AI task helpers, which run with the caller's
-- rights, are granted to PUBLIC.

CREATE SCHEMA IF NOT EXISTS rowcast;
-- Lets any role call the API-facing functions; the tables grant nothing.
GRANT USAGE ON SCHEMA rowcast TO PUBLIC;

CREATE TABLE IF NOT EXISTS rowcast.meta (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch          uuid NOT NULL DEFAULT gen_random_uuid(),
    schema_version int  NOT NULL
);
INSERT INTO rowcast.meta (schema_version) VALUES (2) ON CONFLICT DO NOTHING;
-- The doorbell: rowcast.bell is 0 while the ticker does not want it rung,
-- anything else (1, or never set) while it does. The ticker arms it when it
-- goes idle and disarms it while changes flow (it polls then anyway), so
-- committing transactions pay for a NOTIFY, which takes a cluster-wide lock
-- at commit, only when it saves latency. A sequence because every captured
-- change looks at it: pg_sequence_last_value is a function call, where
-- reading a table is a query through the executor (measured under callgrind
-- on a one-row UPDATE: 6k instructions against 30k for the table with a
-- once-per-transaction memo). setval takes effect at once, outside
-- transactions, as the ticker wants.
CREATE SEQUENCE IF NOT EXISTS rowcast.bell MINVALUE 0 MAXVALUE 1 START 1;
REVOKE ALL ON SEQUENCE rowcast.bell FROM PUBLIC;
-- meta.bell: the doorbell before the sequence. Relays of that version set
-- it, so it stays while they run on during an upgrade (nothing reads it).
ALTER TABLE rowcast.meta ADD COLUMN IF NOT EXISTS bell boolean NOT NULL DEFAULT true;

-- What pruning deleted, per stream: the last tick that held a deleted row
-- of the stream. A resume from before it is answered with resync.
CREATE TABLE IF NOT EXISTS rowcast.pruned (
    stream  text PRIMARY KEY,
    through bigint NOT NULL
);

-- The changelog: one immutable row per captured change. No primary key:
-- nothing looks a row up by id, and each index costs every captured write.
CREATE TABLE IF NOT EXISTS rowcast.changelog (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    xid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream       text NOT NULL,
    origin_at    timestamptz DEFAULT nullif(current_setting('rowcast.commit_time', true), '')::timestamptz,
    tbl          text NOT NULL,
    op           "char" NOT NULL,
    entity_id    text,
    team_id      text,
    old_team_id  text,
    user_id      text,
    actor        text,
    request_id   text,
    row_data     json,
    changes      jsonb,
    old_data     jsonb
);
-- origin_at: in logical mode the source transaction's commit time, which the
-- slot holder names per source transaction (several may share one writing
-- transaction); in trigger mode the tick's time stands for the commit time.
-- entity_key: for a table with a composite key, every key column under its
-- own name ({"deal_id": 5, "user_id": 9}); entity_id then holds the values
-- joined by ':' (each with '\' and ':' escaped by a '\').
ALTER TABLE rowcast.changelog ADD COLUMN IF NOT EXISTS entity_key jsonb;
-- old_row: an update's old row beside its new one in row_data (an entity's
-- excluded columns null in both); the relay computes the changed columns
-- from the two, off the writer's path. changes holds them only where capture computed them
-- itself (AI tasks).
ALTER TABLE rowcast.changelog ADD COLUMN IF NOT EXISTS old_row json;
-- The rows are json, not jsonb: to_json renders a row in its columns'
-- order without sorting its keys or building a jsonb value, and the relay
-- renders the text as jsonb would. The bench's one-row UPDATE costs 14 %
-- less for it (callgrind: 420k-423k instructions per transaction against
-- 483k-492k). Earlier installs wrote jsonb; the change rewrites the
-- changelog once.
DO $json$
BEGIN
    IF EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'rowcast.changelog'::regclass
               AND attname IN ('row_data', 'old_row') AND atttypid = 'jsonb'::regtype) THEN
        ALTER TABLE rowcast.changelog ALTER COLUMN row_data TYPE json, ALTER COLUMN old_row TYPE json;
    END IF;
END
$json$;
-- Version 1 numbered rows at commit, under a lock per stream.
ALTER TABLE rowcast.changelog DROP CONSTRAINT IF EXISTS changelog_pkey;
ALTER TABLE rowcast.changelog DROP COLUMN IF EXISTS seq, DROP COLUMN IF EXISTS committed_at,
    DROP COLUMN IF EXISTS async_commit;
-- Batches read by transaction id; resumes by stream and transaction id, and
-- the rest of a transaction after one of its changes by (xid, id), a page
-- at a time (by xid alone each page of a 100,000-row transaction read all
-- of it). An upgrade builds it while writes to captured tables wait: 0.4 s
-- per million changelog rows measured.
CREATE INDEX IF NOT EXISTS changelog_xid_id ON rowcast.changelog (xid, id);
DROP INDEX IF EXISTS rowcast.changelog_xid;
CREATE INDEX IF NOT EXISTS changelog_stream_xid ON rowcast.changelog (stream, xid);

-- The ticks: tick n's batch is the changelog rows of the transactions
-- visible in snap and not in tick n-1's snap. Ticks are numbered 1, 2, 3, …
-- without gaps (pruning deletes the oldest); snap_xmax is pg_snapshot_xmax(snap), which never decreases from
-- one tick to the next, for finding the tick of a row (the first whose
-- snapshot shows its transaction). at stands for the commit time of the
-- batch's transactions.
CREATE TABLE IF NOT EXISTS rowcast.ticks (
    tick bigint PRIMARY KEY,
    snap pg_snapshot NOT NULL,
    snap_xmax xid8 NOT NULL,
    at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS ticks_xmax ON rowcast.ticks (snap_xmax, tick);
CREATE INDEX IF NOT EXISTS ticks_at ON rowcast.ticks (at);

-- Upgrade from version 1: its rows and positions do not carry over (clients
-- resync once); the first tick starts the history.
DO $up$
BEGIN
    IF (SELECT schema_version FROM rowcast.meta) < 2 THEN
        DELETE FROM rowcast.changelog;
        DELETE FROM rowcast.pruned;
        UPDATE rowcast.meta SET epoch = gen_random_uuid(), schema_version = 2;
    END IF;
END
$up$;
INSERT INTO rowcast.ticks (tick, snap, snap_xmax)
SELECT 1, pg_current_snapshot(), pg_snapshot_xmax(pg_current_snapshot())
WHERE NOT EXISTS (SELECT FROM rowcast.ticks);

-- Logical capture: the last source commit LSN written, per slot, updated in
-- the same transaction as the changes it covers.
CREATE TABLE IF NOT EXISTS rowcast.logical_state (
    slot       text PRIMARY KEY,
    commit_lsn pg_lsn NOT NULL
);

-- Logical capture: the excluded columns the slot holder renders null in the
-- rows it hands to a table's apply function (schema.name), written by
-- install with the apply function, which refuses rows rendered from another
-- list; the holder reads them at each Relation message.
CREATE TABLE IF NOT EXISTS rowcast.holder_nulls (
    tbl     text PRIMARY KEY,
    columns text[] NOT NULL
);

-- AI tasks: the highest progress sent per running task, so a lower write is
-- sent with it. Rows go when the task completes or fails.
CREATE TABLE IF NOT EXISTS rowcast.task_progress (
    tbl  text    NOT NULL,
    id   text    NOT NULL,
    high integer NOT NULL,
    PRIMARY KEY (tbl, id)
);

-- Objects of version 1 (commit-time numbering, crash detection).
DROP TABLE IF EXISTS rowcast.pending CASCADE;
DROP FUNCTION IF EXISTS rowcast.sequence();
DROP FUNCTION IF EXISTS rowcast.mark();
DROP TABLE IF EXISTS rowcast.streams;
DROP TABLE IF EXISTS rowcast.boot;

-- rowcast.ring() rings the writers' doorbell when the ticker asked for it:
-- a notification sent at commit (PostgreSQL sends a transaction's
-- identical notifications once). truncated() calls it; the generated
-- capture functions inline the same test (triggers.ringSQL), which spares a
-- function call per change.
CREATE OR REPLACE FUNCTION rowcast.ring() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
{{- if .Notify}}
    IF pg_sequence_last_value('rowcast.bell'::regclass) IS DISTINCT FROM 0 THEN
        PERFORM pg_notify('rowcast', '');
    END IF;
{{- end}}
END
$fn$;

-- rowcast.tick(notify) records a tick when transactions that wrote the changelog
-- became visible since the last one, and returns its number (NULL when
-- there was nothing to tick). The ticker calls it, and so does a resume
-- before it replays, each in its own transaction, committed synchronously:
-- a tick is durable before any relay reads it, and so is every commit its
-- snapshot shows (their commit records precede the tick's in the WAL), even
-- one made with synchronous_commit off. Calls take turns (a transaction
-- lock), and each looks at the ticks the one before recorded.
--
-- When transaction ids went back (the database was restored into another
-- cluster whose counter is behind), positions do not carry over: the
-- history starts again under a new epoch.
--
-- notify rings the tailers' doorbell (rowcast_tick, the tick's number).
-- The ticker asks for it only while another relay's reader listens (each
-- holds the listeners' lock, changelog.listenersKey): its own reader it
-- pokes in process, and every notification wakes every listening backend
-- of the database, whatever its channel. rowcast.tick() always notifies
-- (a resume, and relays built before the argument existed).
CREATE OR REPLACE FUNCTION rowcast.tick(notify boolean) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    cur  pg_snapshot;
    prev record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('rowcast.tick'));
    cur := pg_current_snapshot();
    SELECT t.tick, t.snap, t.snap_xmax INTO prev FROM rowcast.ticks t ORDER BY t.tick DESC LIMIT 1;
    IF prev.tick IS NULL THEN
        prev.tick := 0;
    ELSIF pg_snapshot_xmax(cur) < prev.snap_xmax THEN
        DELETE FROM rowcast.changelog;
        DELETE FROM rowcast.ticks;
        DELETE FROM rowcast.pruned;
        UPDATE rowcast.meta SET epoch = gen_random_uuid();
    -- Not visible in the last tick's snapshot: at or past its xmax, or in
    -- progress then (its xip). Two index lookups, however far back an open
    -- transaction holds the snapshot's xmin.
    ELSIF NOT EXISTS (
        SELECT FROM rowcast.changelog c
        WHERE c.xid >= pg_snapshot_xmax(prev.snap) AND c.xid < pg_snapshot_xmax(cur)
          AND pg_visible_in_snapshot(c.xid, cur)
    -- The xip part looks each transaction up in the index (OFFSET 0
    -- keeps the planner from making it a join, which it planned as a scan
    -- of the whole changelog while the table had no statistics yet), and
    -- only those that became visible: the index entries of one still in
    -- progress are all visited, to no end (a 100,000-row import made each
    -- tick take 100 ms until it ended).
    ) AND NOT EXISTS (
        SELECT FROM (SELECT x.xid FROM pg_snapshot_xip(prev.snap) x(xid) WHERE pg_visible_in_snapshot(x.xid, cur) OFFSET 0) x
        CROSS JOIN LATERAL (SELECT c.xid FROM rowcast.changelog c WHERE c.xid = x.xid OFFSET 0) c
    ) THEN
        RETURN NULL;
    END IF;
    INSERT INTO rowcast.ticks (tick, snap, snap_xmax) VALUES (prev.tick + 1, cur, pg_snapshot_xmax(cur));
    IF notify THEN
        PERFORM pg_notify('rowcast_tick', (prev.tick + 1)::text);
    END IF;
    RETURN prev.tick + 1;
END
$fn$;

CREATE OR REPLACE FUNCTION rowcast.tick() RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $fn$ SELECT rowcast.tick(true) $fn$;

-- team_from in trigger mode: the team of every parent row a transaction
-- deleted, so that a child's capture trigger still finds it when the parent
-- is gone (the child deleted, or its key set to NULL, by ON DELETE CASCADE or
-- SET NULL, which run after the parent's row is deleted).
-- rowcast.parent_deleting(key, col) fills it BEFORE each parent row's
-- DELETE. Readers look only at their own transaction's rows; the pruner
-- deletes those of finished transactions. They cannot go earlier: the
-- children's capture triggers fire after every other AFTER trigger of the
-- parent's statement. Unlogged: a crash aborts their transactions anyway.
CREATE UNLOGGED TABLE IF NOT EXISTS rowcast.gone (
    xid  xid8  NOT NULL DEFAULT pg_current_xact_id(),
    tbl  text  NOT NULL,
    col  text  NOT NULL,
    key  jsonb NOT NULL,
    team text,
    PRIMARY KEY (xid, tbl, col, key)
);

CREATE OR REPLACE FUNCTION rowcast.parent_deleting() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC' SET intervalstyle = 'iso_8601' SET bytea_output = 'hex' AS $fn$
DECLARE
    o jsonb := to_jsonb(OLD);
BEGIN
    IF o -> TG_ARGV[0] IS NOT NULL AND o -> TG_ARGV[0] <> 'null' THEN
        INSERT INTO rowcast.gone AS g (tbl, col, key, team)
        VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_ARGV[1], o -> TG_ARGV[0], o ->> TG_ARGV[1])
        ON CONFLICT (xid, tbl, col, key) DO UPDATE SET team = excluded.team;
    END IF;
    RETURN OLD;
END
$fn$;

-- rowcast.truncated() records a TRUNCATE of a captured table; every session
-- is told to resync.
CREATE OR REPLACE FUNCTION rowcast.truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    INSERT INTO rowcast.changelog (stream, tbl, op)
    VALUES ({{.AllStream}}, TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 'T');
    PERFORM rowcast.ring();
    RETURN NULL;
END
$fn$;

-- rowcast.truncated_logical(tbl) is the logical-mode form of truncated().
CREATE OR REPLACE FUNCTION rowcast.truncated_logical(tbl text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    INSERT INTO rowcast.changelog (stream, tbl, op) VALUES ({{.AllStream}}, tbl, 'T');
END
$fn$;

-- rowcast.set_actor(id) names the actor of the current transaction's
-- changes; rowcast.set_request_id(id) the API request they serve. A session
-- setting never reaches logical decoding, so when wal_level is logical they
-- also write a transactional logical message that the slot holder reads.
-- They run with the caller's rights (granted to PUBLIC below):
-- pg_logical_emit_message needs no privilege (tested as an ordinary role on
-- PostgreSQL 15), and the message only names the caller's own transaction.
CREATE OR REPLACE FUNCTION rowcast.set_actor(actor text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM set_config('rowcast.actor_id', coalesce(actor, ''), true);
    IF current_setting('wal_level') = 'logical' THEN
        PERFORM pg_logical_emit_message(true, 'rowcast.actor', coalesce(actor, ''));
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION rowcast.set_request_id(request_id text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM set_config('rowcast.request_id', coalesce(request_id, ''), true);
    IF current_setting('wal_level') = 'logical' THEN
        PERFORM pg_logical_emit_message(true, 'rowcast.request_id', coalesce(request_id, ''));
    END IF;
END
$fn$;

REVOKE ALL ON FUNCTION rowcast.ring() FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.tick() FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.tick(boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.truncated() FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.truncated_logical(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.parent_deleting() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowcast.set_actor(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION rowcast.set_request_id(text) TO PUBLIC;
