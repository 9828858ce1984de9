-- rowcast schema, version 1. Installed by `rowcast install`; every statement is
-- idempotent. This file is a text/template: {{.Notify}} switches the commit-time
-- doorbell, {{.AllStream}} is relay.AllStream as an SQL literal.
--
-- Ordering design (see docs/design.md, "Order"): row triggers append to
-- rowcast.changelog with no seq and then mark the transaction in rowcast.pending; a
-- deferred constraint trigger on that marker runs once per transaction at
-- COMMIT, locks the counter row of every stream the transaction touched (in
-- sorted order, so no deadlock) and numbers the transaction's rows. The
-- counter's row lock is held through the commit, so each stream's seq is
-- gap-free and in commit order.
--
-- Privileges: everything here is owned by the role that runs install (the
-- tables' owner, or a superuser). The capture path (the generated capture
-- and apply functions, mark(), sequence(), truncated()) is SECURITY DEFINER
-- with a pinned search_path and schema-qualified names, so a role that may
-- write a captured table needs no right on this schema's tables. EXECUTE on
-- every function that writes the changelog is revoked from PUBLIC (a trigger
-- fires without it; without it nobody can attach a capture function to a
-- table of their own, or call an apply function to forge a change). Only
-- set_actor, set_request_id and the AI task helpers, which run with the
-- caller's rights, are granted to PUBLIC.

CREATE SCHEMA IF NOT EXISTS rowcast;
-- Lets any role call the API-facing functions; the tables grant nothing.
GRANT USAGE ON SCHEMA rowcast TO PUBLIC;

CREATE TABLE IF NOT EXISTS rowcast.meta (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch          uuid NOT NULL DEFAULT gen_random_uuid(),
    schema_version int  NOT NULL
);
INSERT INTO rowcast.meta (schema_version) VALUES (1) ON CONFLICT DO NOTHING;
-- bell: a relay is idle and wants the doorbell rung. Relays arm it when they
-- go idle and disarm it while changes flow (they poll then anyway), so
-- committing transactions pay for a NOTIFY, which takes a cluster-wide lock
-- at commit, only when it saves latency.
ALTER TABLE rowcast.meta ADD COLUMN IF NOT EXISTS bell boolean NOT NULL DEFAULT true;

CREATE TABLE IF NOT EXISTS rowcast.streams (
    stream         text PRIMARY KEY,
    last_seq       bigint NOT NULL DEFAULT 0,
    last_at        timestamptz NOT NULL DEFAULT '-infinity'
);

-- What pruning deleted, per stream: a resume from below it is answered with
-- resync. A table of its own, so that the pruner never updates the counter
-- rows that committing writers lock.
CREATE TABLE IF NOT EXISTS rowcast.pruned (
    stream  text PRIMARY KEY,
    through bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS rowcast.changelog (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream       text NOT NULL,
    seq          bigint,
    committed_at timestamptz,
    origin_at    timestamptz DEFAULT nullif(current_setting('rowcast.commit_time', true), '')::timestamptz,
    tbl          text NOT NULL,
    op           "char" NOT NULL,
    entity_id    text,
    team_id      text,
    old_team_id  text,
    user_id      text,
    actor        text,
    request_id   text,
    row_data     jsonb,
    changes      jsonb,
    old_data     jsonb
);
-- origin_at: in logical mode the source transaction's commit time, which the
-- slot holder names per source transaction (several may share one writing
-- transaction); committed_at stays the ordering key.
ALTER TABLE rowcast.changelog ALTER COLUMN origin_at
    SET DEFAULT nullif(current_setting('rowcast.commit_time', true), '')::timestamptz;
-- entity_key: for a table with a composite key, every key column under its
-- own name ({"deal_id": 5, "user_id": 9}); entity_id then holds the values
-- joined by ':' (each with '\' and ':' escaped by a '\').
ALTER TABLE rowcast.changelog ADD COLUMN IF NOT EXISTS entity_key jsonb;
-- async_commit: the writing transaction committed with synchronous_commit
-- off, so its commit may be visible before the WAL holds it; relays wait for
-- the WAL flush before they hand such a transaction on.
ALTER TABLE rowcast.changelog ADD COLUMN IF NOT EXISTS async_commit boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS changelog_xid ON rowcast.changelog (xid);
CREATE INDEX IF NOT EXISTS changelog_stream_seq ON rowcast.changelog (stream, seq);
CREATE INDEX IF NOT EXISTS changelog_committed_at ON rowcast.changelog (committed_at);

-- Logical capture: the last source commit LSN written, per slot, updated in
-- the same transaction as the changes it covers.
CREATE TABLE IF NOT EXISTS rowcast.logical_state (
    slot       text PRIMARY KEY,
    commit_lsn pg_lsn NOT NULL
);

-- AI tasks: the highest progress sent per running task, so a lower write is
-- sent with it. Rows go when the task completes or fails.
CREATE TABLE IF NOT EXISTS rowcast.task_progress (
    tbl  text    NOT NULL,
    id   text    NOT NULL,
    high integer NOT NULL,
    PRIMARY KEY (tbl, id)
);

-- boot: a token that changes whenever the server forgets unflushed commits
-- without restarting (crash recovery after a backend died) or another server
-- takes over (a promoted standby): both empty unlogged tables. A relay
-- writes it when it finds none, and re-reads from an older position when it
-- changed.
CREATE UNLOGGED TABLE IF NOT EXISTS rowcast.boot (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    token     uuid NOT NULL DEFAULT gen_random_uuid()
);

-- One row per open transaction that wrote to the changelog. Unlogged: a
-- crash aborts those transactions anyway.
CREATE UNLOGGED TABLE IF NOT EXISTS rowcast.pending (xid xid8 PRIMARY KEY);

-- rowcast.mark() is called by every capture trigger after it appends. It
-- inserts the transaction's marker once (a transaction-local setting
-- remembers it, and is rolled back with a savepoint just as the marker is).
-- After, not before: a writer that runs SET CONSTRAINTS ALL IMMEDIATE makes
-- the sequencer fire as soon as the marker is inserted, and it must find the
-- row to number then (see sequence()).
CREATE OR REPLACE FUNCTION rowcast.mark() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF current_setting('rowcast.marked', true) IS DISTINCT FROM '1' THEN
        -- Set before the insert: an immediate sequencer clears it again.
        PERFORM set_config('rowcast.marked', '1', true);
        INSERT INTO rowcast.pending (xid) VALUES (pg_current_xact_id()) ON CONFLICT DO NOTHING;
    END IF;
END
$fn$;

-- rowcast.sequence() numbers the transaction's changelog rows at COMMIT.
--
-- A writer can make it fire earlier: SET CONSTRAINTS ALL IMMEDIATE fires it
-- at once, and every marker inserted after it (the next change) fires it
-- again at the end of that statement. Each run numbers the rows not yet
-- numbered; the counter locks it takes are held to the commit all the same,
-- so the order stays the commit order. A run after the first also moves the
-- transaction's earlier rows, and the last_at of every stream they are in,
-- to its commit time, so that the transaction keeps one commit time.
CREATE OR REPLACE FUNCTION rowcast.sequence() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    x       xid8 := pg_current_xact_id();
    r       record;
    v_streams text[] := '{}';
    v_bases   bigint[] := '{}';
    v_earlier text[];
    base    bigint;
    at      timestamptz;
    ts      timestamptz := '-infinity';
    again   boolean := current_setting('rowcast.sequenced', true) = '1';
BEGIN
    -- Changes made after this point (by another deferred trigger, or by the
    -- writer when it made this trigger immediate) mark again.
    PERFORM set_config('rowcast.marked', '', true);
    DELETE FROM rowcast.pending WHERE xid = x;
    FOR r IN
        SELECT stream, count(*) AS n FROM rowcast.changelog
        WHERE xid = x AND seq IS NULL
        GROUP BY stream ORDER BY stream COLLATE "C"
    LOOP
        INSERT INTO rowcast.streams AS s (stream, last_seq, last_at) VALUES (r.stream, r.n, clock_timestamp())
        ON CONFLICT (stream) DO UPDATE SET last_seq = s.last_seq + excluded.last_seq,
            last_at = greatest(clock_timestamp(), s.last_at + interval '1 microsecond')
        RETURNING s.last_seq - r.n, s.last_at INTO base, at;
        ts := greatest(ts, at);
        v_streams := v_streams || r.stream;
        v_bases := v_bases || base;
    END LOOP;
    IF cardinality(v_streams) = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('rowcast.sequenced', '1', true);
    IF again THEN
        -- Streams numbered by an earlier run: their counter rows are locked
        -- by this transaction already.
        SELECT array_agg(DISTINCT stream) INTO v_earlier FROM rowcast.changelog
        WHERE xid = x AND seq IS NOT NULL AND NOT stream = ANY (v_streams);
        IF v_earlier IS NOT NULL THEN
            SELECT greatest(ts, max(last_at) + interval '1 microsecond') INTO ts
            FROM rowcast.streams WHERE stream = ANY (v_earlier);
            v_streams := v_streams || v_earlier;
        END IF;
    END IF;
    -- The commit time is taken under every counter lock and kept above each
    -- stream's last commit time, so that for two transactions sharing a
    -- stream the later one in seq order has the strictly later commit time:
    -- ordering by committed_at then agrees with every stream's seq order.
    -- One time for the whole transaction keeps its changes together.
    IF cardinality(v_streams) > 1 THEN
        UPDATE rowcast.streams SET last_at = ts WHERE stream = ANY (v_streams) AND last_at < ts;
    END IF;
    IF again THEN
        UPDATE rowcast.changelog SET committed_at = ts,
            async_commit = current_setting('synchronous_commit') = 'off'
        WHERE xid = x AND seq IS NOT NULL;
    END IF;
    UPDATE rowcast.changelog c
    SET seq = b.base + v.rn, committed_at = ts,
        async_commit = current_setting('synchronous_commit') = 'off'
    FROM (
        SELECT id, stream, row_number() OVER (PARTITION BY stream ORDER BY id) AS rn
        FROM rowcast.changelog WHERE xid = x AND seq IS NULL
    ) v
    JOIN unnest(v_streams, v_bases) AS b (stream, base) ON b.stream = v.stream
    WHERE c.id = v.id;
    IF (SELECT bell FROM rowcast.meta) THEN
        PERFORM pg_notify('rowcast', '');
    END IF;
    RETURN NULL;
END
$fn$;

DROP TRIGGER IF EXISTS sequence_at_commit ON rowcast.pending;
CREATE CONSTRAINT TRIGGER sequence_at_commit AFTER INSERT ON rowcast.pending
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION rowcast.sequence();

-- team_from in trigger mode: the team of every parent row a transaction
-- deleted, so that a child's capture trigger still finds it when the parent
-- is gone (the child deleted, or its key set to NULL, by ON DELETE CASCADE or
-- SET NULL, which run after the parent's row is deleted).
-- rowcast.parent_deleting(key, col) fills it BEFORE each parent row's
-- DELETE. Readers look only at their own transaction's rows; the pruner
-- deletes those of finished transactions. They cannot go earlier: the
-- children's capture triggers fire after every other AFTER trigger of the
-- parent's statement, and at COMMIT is too late for a writer that made the
-- sequencer immediate. Unlogged: a crash aborts their transactions anyway.
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
    VALUES ('all', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 'T');
    PERFORM rowcast.mark();
    RETURN NULL;
END
$fn$;

-- rowcast.truncated_logical(tbl) is the logical-mode form of truncated().
CREATE OR REPLACE FUNCTION rowcast.truncated_logical(tbl text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    INSERT INTO rowcast.changelog (stream, tbl, op) VALUES ('all', tbl, 'T');
    PERFORM rowcast.mark();
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

REVOKE ALL ON FUNCTION rowcast.mark() FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.sequence() FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.truncated() FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.truncated_logical(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION rowcast.parent_deleting() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowcast.set_actor(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION rowcast.set_request_id(text) TO PUBLIC;
COMMENT ON FUNCTION rowcast.sequence() IS 'rowcast sha256:010b30d4cc447f2f3219815b';

CREATE OR REPLACE FUNCTION rowcast."capture__public__escrows"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET intervalstyle = 'iso_8601'
SET bytea_output = 'hex'
AS $fn$
DECLARE
    hw    integer;
    n     jsonb;
    o     jsonb;
    ch    jsonb;
    actor text := nullif(current_setting('rowcast.actor_id', true), '');
    req   text := nullif(current_setting('rowcast.request_id', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW."team_id" IS NULL THEN RETURN NULL; END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.escrows', 'I', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, (to_jsonb(NEW) - ARRAY['internal_notes']::text[]), NULL);
    ELSIF TG_OP = 'UPDATE' THEN
        n := (to_jsonb(NEW) - ARRAY['internal_notes']::text[]);
        o := to_jsonb(OLD);
        SELECT jsonb_object_agg(e.key, e.value) INTO ch
        FROM jsonb_each(n) e WHERE o -> e.key IS DISTINCT FROM e.value;
        IF ch IS NULL THEN RETURN NULL; END IF;
        IF NEW."team_id" IS NOT DISTINCT FROM OLD."team_id" THEN
            IF NEW."team_id" IS NULL THEN RETURN NULL; END IF;
            INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.escrows', 'U', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, NULL, ch);
        ELSE
            -- A team move is recorded in both teams' streams.
            IF OLD."team_id" IS NOT NULL THEN
                IF NEW."team_id" IS NULL THEN
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.escrows', 'D', NEW."id"::text, OLD."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, NULL, NULL);
                ELSE
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.escrows', 'U', NEW."id"::text, NEW."team_id"::text, OLD."team_id"::text, coalesce(actor, NEW."updated_by"::text), req, n, ch);
                END IF;
            END IF;
            IF NEW."team_id" IS NOT NULL THEN
                IF OLD."team_id" IS NULL THEN
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.escrows', 'I', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, n, NULL);
                ELSE
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.escrows', 'U', NEW."id"::text, NEW."team_id"::text, OLD."team_id"::text, coalesce(actor, NEW."updated_by"::text), req, n, ch);
                END IF;
            END IF;
        END IF;
    ELSE
        IF OLD."team_id" IS NULL THEN RETURN NULL; END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.escrows', 'D', OLD."id"::text, OLD."team_id"::text, NULL, coalesce(actor, OLD."updated_by"::text), req, NULL, NULL);
    END IF;
    IF current_setting('rowcast.marked', true) IS DISTINCT FROM '1' THEN PERFORM rowcast.mark(); END IF;
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION rowcast."capture__public__escrows"() FROM PUBLIC;
COMMENT ON FUNCTION rowcast."capture__public__escrows"() IS 'rowcast sha256:31b7d6b5b5efc038e67f9f2d';
DROP TRIGGER IF EXISTS rowcast_capture ON "public"."escrows";
CREATE TRIGGER rowcast_capture AFTER INSERT OR UPDATE OR DELETE ON "public"."escrows" FOR EACH ROW EXECUTE FUNCTION rowcast."capture__public__escrows"();
DROP TRIGGER IF EXISTS rowcast_truncate ON "public"."escrows";
CREATE TRIGGER rowcast_truncate AFTER TRUNCATE ON "public"."escrows" FOR EACH STATEMENT EXECUTE FUNCTION rowcast.truncated();

CREATE OR REPLACE FUNCTION rowcast."capture__public__listings"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET intervalstyle = 'iso_8601'
SET bytea_output = 'hex'
AS $fn$
DECLARE
    hw    integer;
    n     jsonb;
    o     jsonb;
    ch    jsonb;
    actor text := nullif(current_setting('rowcast.actor_id', true), '');
    req   text := nullif(current_setting('rowcast.request_id', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW."team_id" IS NULL THEN RETURN NULL; END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.listings', 'I', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, to_jsonb(NEW), NULL);
    ELSIF TG_OP = 'UPDATE' THEN
        n := to_jsonb(NEW);
        o := to_jsonb(OLD);
        SELECT jsonb_object_agg(e.key, e.value) INTO ch
        FROM jsonb_each(n) e WHERE o -> e.key IS DISTINCT FROM e.value;
        IF ch IS NULL THEN RETURN NULL; END IF;
        IF NEW."team_id" IS NOT DISTINCT FROM OLD."team_id" THEN
            IF NEW."team_id" IS NULL THEN RETURN NULL; END IF;
            INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.listings', 'U', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, NULL, ch);
        ELSE
            -- A team move is recorded in both teams' streams.
            IF OLD."team_id" IS NOT NULL THEN
                IF NEW."team_id" IS NULL THEN
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.listings', 'D', NEW."id"::text, OLD."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, NULL, NULL);
                ELSE
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.listings', 'U', NEW."id"::text, NEW."team_id"::text, OLD."team_id"::text, coalesce(actor, NEW."updated_by"::text), req, n, ch);
                END IF;
            END IF;
            IF NEW."team_id" IS NOT NULL THEN
                IF OLD."team_id" IS NULL THEN
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.listings', 'I', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, n, NULL);
                ELSE
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.listings', 'U', NEW."id"::text, NEW."team_id"::text, OLD."team_id"::text, coalesce(actor, NEW."updated_by"::text), req, n, ch);
                END IF;
            END IF;
        END IF;
    ELSE
        IF OLD."team_id" IS NULL THEN RETURN NULL; END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.listings', 'D', OLD."id"::text, OLD."team_id"::text, NULL, coalesce(actor, OLD."updated_by"::text), req, NULL, NULL);
    END IF;
    IF current_setting('rowcast.marked', true) IS DISTINCT FROM '1' THEN PERFORM rowcast.mark(); END IF;
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION rowcast."capture__public__listings"() FROM PUBLIC;
COMMENT ON FUNCTION rowcast."capture__public__listings"() IS 'rowcast sha256:49242b54d95f331eb4a3a056';
DROP TRIGGER IF EXISTS rowcast_capture ON "public"."listings";
CREATE TRIGGER rowcast_capture AFTER INSERT OR UPDATE OR DELETE ON "public"."listings" FOR EACH ROW EXECUTE FUNCTION rowcast."capture__public__listings"();
DROP TRIGGER IF EXISTS rowcast_truncate ON "public"."listings";
CREATE TRIGGER rowcast_truncate AFTER TRUNCATE ON "public"."listings" FOR EACH STATEMENT EXECUTE FUNCTION rowcast.truncated();

CREATE OR REPLACE FUNCTION rowcast."capture__public__clients"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET intervalstyle = 'iso_8601'
SET bytea_output = 'hex'
AS $fn$
DECLARE
    hw    integer;
    n     jsonb;
    o     jsonb;
    ch    jsonb;
    actor text := nullif(current_setting('rowcast.actor_id', true), '');
    req   text := nullif(current_setting('rowcast.request_id', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW."team_id" IS NULL THEN RETURN NULL; END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.clients', 'I', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, (to_jsonb(NEW) - ARRAY['internal_notes']::text[]), NULL);
    ELSIF TG_OP = 'UPDATE' THEN
        n := (to_jsonb(NEW) - ARRAY['internal_notes']::text[]);
        o := to_jsonb(OLD);
        SELECT jsonb_object_agg(e.key, e.value) INTO ch
        FROM jsonb_each(n) e WHERE o -> e.key IS DISTINCT FROM e.value;
        IF ch IS NULL THEN RETURN NULL; END IF;
        IF NEW."team_id" IS NOT DISTINCT FROM OLD."team_id" THEN
            IF NEW."team_id" IS NULL THEN RETURN NULL; END IF;
            INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.clients', 'U', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, NULL, ch);
        ELSE
            -- A team move is recorded in both teams' streams.
            IF OLD."team_id" IS NOT NULL THEN
                IF NEW."team_id" IS NULL THEN
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.clients', 'D', NEW."id"::text, OLD."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, NULL, NULL);
                ELSE
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.clients', 'U', NEW."id"::text, NEW."team_id"::text, OLD."team_id"::text, coalesce(actor, NEW."updated_by"::text), req, n, ch);
                END IF;
            END IF;
            IF NEW."team_id" IS NOT NULL THEN
                IF OLD."team_id" IS NULL THEN
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.clients', 'I', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, n, NULL);
                ELSE
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.clients', 'U', NEW."id"::text, NEW."team_id"::text, OLD."team_id"::text, coalesce(actor, NEW."updated_by"::text), req, n, ch);
                END IF;
            END IF;
        END IF;
    ELSE
        IF OLD."team_id" IS NULL THEN RETURN NULL; END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.clients', 'D', OLD."id"::text, OLD."team_id"::text, NULL, coalesce(actor, OLD."updated_by"::text), req, NULL, NULL);
    END IF;
    IF current_setting('rowcast.marked', true) IS DISTINCT FROM '1' THEN PERFORM rowcast.mark(); END IF;
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION rowcast."capture__public__clients"() FROM PUBLIC;
COMMENT ON FUNCTION rowcast."capture__public__clients"() IS 'rowcast sha256:5b230f8a1e54fbacfa7042cc';
DROP TRIGGER IF EXISTS rowcast_capture ON "public"."clients";
CREATE TRIGGER rowcast_capture AFTER INSERT OR UPDATE OR DELETE ON "public"."clients" FOR EACH ROW EXECUTE FUNCTION rowcast."capture__public__clients"();
DROP TRIGGER IF EXISTS rowcast_truncate ON "public"."clients";
CREATE TRIGGER rowcast_truncate AFTER TRUNCATE ON "public"."clients" FOR EACH STATEMENT EXECUTE FUNCTION rowcast.truncated();

CREATE OR REPLACE FUNCTION rowcast."capture__public__appointments"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET intervalstyle = 'iso_8601'
SET bytea_output = 'hex'
AS $fn$
DECLARE
    hw    integer;
    n     jsonb;
    o     jsonb;
    ch    jsonb;
    actor text := nullif(current_setting('rowcast.actor_id', true), '');
    req   text := nullif(current_setting('rowcast.request_id', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW."team_id" IS NULL THEN RETURN NULL; END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.appointments', 'I', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, to_jsonb(NEW), NULL);
    ELSIF TG_OP = 'UPDATE' THEN
        n := to_jsonb(NEW);
        o := to_jsonb(OLD);
        SELECT jsonb_object_agg(e.key, e.value) INTO ch
        FROM jsonb_each(n) e WHERE o -> e.key IS DISTINCT FROM e.value;
        IF ch IS NULL THEN RETURN NULL; END IF;
        IF NEW."team_id" IS NOT DISTINCT FROM OLD."team_id" THEN
            IF NEW."team_id" IS NULL THEN RETURN NULL; END IF;
            INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.appointments', 'U', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, NULL, ch);
        ELSE
            -- A team move is recorded in both teams' streams.
            IF OLD."team_id" IS NOT NULL THEN
                IF NEW."team_id" IS NULL THEN
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.appointments', 'D', NEW."id"::text, OLD."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, NULL, NULL);
                ELSE
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.appointments', 'U', NEW."id"::text, NEW."team_id"::text, OLD."team_id"::text, coalesce(actor, NEW."updated_by"::text), req, n, ch);
                END IF;
            END IF;
            IF NEW."team_id" IS NOT NULL THEN
                IF OLD."team_id" IS NULL THEN
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.appointments', 'I', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, n, NULL);
                ELSE
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.appointments', 'U', NEW."id"::text, NEW."team_id"::text, OLD."team_id"::text, coalesce(actor, NEW."updated_by"::text), req, n, ch);
                END IF;
            END IF;
        END IF;
    ELSE
        IF OLD."team_id" IS NULL THEN RETURN NULL; END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.appointments', 'D', OLD."id"::text, OLD."team_id"::text, NULL, coalesce(actor, OLD."updated_by"::text), req, NULL, NULL);
    END IF;
    IF current_setting('rowcast.marked', true) IS DISTINCT FROM '1' THEN PERFORM rowcast.mark(); END IF;
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION rowcast."capture__public__appointments"() FROM PUBLIC;
COMMENT ON FUNCTION rowcast."capture__public__appointments"() IS 'rowcast sha256:153ff47bd23bafb6bfdc34ff';
DROP TRIGGER IF EXISTS rowcast_capture ON "public"."appointments";
CREATE TRIGGER rowcast_capture AFTER INSERT OR UPDATE OR DELETE ON "public"."appointments" FOR EACH ROW EXECUTE FUNCTION rowcast."capture__public__appointments"();
DROP TRIGGER IF EXISTS rowcast_truncate ON "public"."appointments";
CREATE TRIGGER rowcast_truncate AFTER TRUNCATE ON "public"."appointments" FOR EACH STATEMENT EXECUTE FUNCTION rowcast.truncated();

CREATE OR REPLACE FUNCTION rowcast."capture__public__leads"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET intervalstyle = 'iso_8601'
SET bytea_output = 'hex'
AS $fn$
DECLARE
    hw    integer;
    n     jsonb;
    o     jsonb;
    ch    jsonb;
    actor text := nullif(current_setting('rowcast.actor_id', true), '');
    req   text := nullif(current_setting('rowcast.request_id', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW."team_id" IS NULL THEN RETURN NULL; END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.leads', 'I', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, to_jsonb(NEW), NULL);
    ELSIF TG_OP = 'UPDATE' THEN
        n := to_jsonb(NEW);
        o := to_jsonb(OLD);
        SELECT jsonb_object_agg(e.key, e.value) INTO ch
        FROM jsonb_each(n) e WHERE o -> e.key IS DISTINCT FROM e.value;
        IF ch IS NULL THEN RETURN NULL; END IF;
        IF NEW."team_id" IS NOT DISTINCT FROM OLD."team_id" THEN
            IF NEW."team_id" IS NULL THEN RETURN NULL; END IF;
            INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.leads', 'U', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, NULL, ch);
        ELSE
            -- A team move is recorded in both teams' streams.
            IF OLD."team_id" IS NOT NULL THEN
                IF NEW."team_id" IS NULL THEN
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.leads', 'D', NEW."id"::text, OLD."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, NULL, NULL);
                ELSE
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.leads', 'U', NEW."id"::text, NEW."team_id"::text, OLD."team_id"::text, coalesce(actor, NEW."updated_by"::text), req, n, ch);
                END IF;
            END IF;
            IF NEW."team_id" IS NOT NULL THEN
                IF OLD."team_id" IS NULL THEN
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.leads', 'I', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, n, NULL);
                ELSE
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.leads', 'U', NEW."id"::text, NEW."team_id"::text, OLD."team_id"::text, coalesce(actor, NEW."updated_by"::text), req, n, ch);
                END IF;
            END IF;
        END IF;
    ELSE
        IF OLD."team_id" IS NULL THEN RETURN NULL; END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.leads', 'D', OLD."id"::text, OLD."team_id"::text, NULL, coalesce(actor, OLD."updated_by"::text), req, NULL, NULL);
    END IF;
    IF current_setting('rowcast.marked', true) IS DISTINCT FROM '1' THEN PERFORM rowcast.mark(); END IF;
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION rowcast."capture__public__leads"() FROM PUBLIC;
COMMENT ON FUNCTION rowcast."capture__public__leads"() IS 'rowcast sha256:c8e2b8cc3888357543dc326f';
DROP TRIGGER IF EXISTS rowcast_capture ON "public"."leads";
CREATE TRIGGER rowcast_capture AFTER INSERT OR UPDATE OR DELETE ON "public"."leads" FOR EACH ROW EXECUTE FUNCTION rowcast."capture__public__leads"();
DROP TRIGGER IF EXISTS rowcast_truncate ON "public"."leads";
CREATE TRIGGER rowcast_truncate AFTER TRUNCATE ON "public"."leads" FOR EACH STATEMENT EXECUTE FUNCTION rowcast.truncated();

CREATE OR REPLACE FUNCTION rowcast."capture__public__notes"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET intervalstyle = 'iso_8601'
SET bytea_output = 'hex'
AS $fn$
DECLARE
    hw    integer;
    n     jsonb;
    o     jsonb;
    ch    jsonb;
    actor text := nullif(current_setting('rowcast.actor_id', true), '');
    req   text := nullif(current_setting('rowcast.request_id', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW."team_id" IS NULL THEN RETURN NULL; END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.notes', 'I', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, to_jsonb(NEW), NULL);
    ELSIF TG_OP = 'UPDATE' THEN
        n := to_jsonb(NEW);
        o := to_jsonb(OLD);
        SELECT jsonb_object_agg(e.key, e.value) INTO ch
        FROM jsonb_each(n) e WHERE o -> e.key IS DISTINCT FROM e.value;
        IF ch IS NULL THEN RETURN NULL; END IF;
        IF NEW."team_id" IS NOT DISTINCT FROM OLD."team_id" THEN
            IF NEW."team_id" IS NULL THEN RETURN NULL; END IF;
            INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.notes', 'U', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, NULL, ch);
        ELSE
            -- A team move is recorded in both teams' streams.
            IF OLD."team_id" IS NOT NULL THEN
                IF NEW."team_id" IS NULL THEN
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.notes', 'D', NEW."id"::text, OLD."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, NULL, NULL);
                ELSE
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.notes', 'U', NEW."id"::text, NEW."team_id"::text, OLD."team_id"::text, coalesce(actor, NEW."updated_by"::text), req, n, ch);
                END IF;
            END IF;
            IF NEW."team_id" IS NOT NULL THEN
                IF OLD."team_id" IS NULL THEN
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.notes', 'I', NEW."id"::text, NEW."team_id"::text, NULL, coalesce(actor, NEW."updated_by"::text), req, n, NULL);
                ELSE
                    INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || NEW."team_id"::text, 'public.notes', 'U', NEW."id"::text, NEW."team_id"::text, OLD."team_id"::text, coalesce(actor, NEW."updated_by"::text), req, n, ch);
                END IF;
            END IF;
        END IF;
    ELSE
        IF OLD."team_id" IS NULL THEN RETURN NULL; END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, old_team_id, actor, request_id, row_data, changes)
            VALUES ('team:' || OLD."team_id"::text, 'public.notes', 'D', OLD."id"::text, OLD."team_id"::text, NULL, coalesce(actor, OLD."updated_by"::text), req, NULL, NULL);
    END IF;
    IF current_setting('rowcast.marked', true) IS DISTINCT FROM '1' THEN PERFORM rowcast.mark(); END IF;
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION rowcast."capture__public__notes"() FROM PUBLIC;
COMMENT ON FUNCTION rowcast."capture__public__notes"() IS 'rowcast sha256:005d686a0bac5907a311cab0';
DROP TRIGGER IF EXISTS rowcast_capture ON "public"."notes";
CREATE TRIGGER rowcast_capture AFTER INSERT OR UPDATE OR DELETE ON "public"."notes" FOR EACH ROW EXECUTE FUNCTION rowcast."capture__public__notes"();
DROP TRIGGER IF EXISTS rowcast_truncate ON "public"."notes";
CREATE TRIGGER rowcast_truncate AFTER TRUNCATE ON "public"."notes" FOR EACH STATEMENT EXECUTE FUNCTION rowcast.truncated();

CREATE OR REPLACE FUNCTION rowcast."capture__public__ai_tasks"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET intervalstyle = 'iso_8601'
SET bytea_output = 'hex'
AS $fn$
DECLARE
    hw    integer;
    n     jsonb;
    o     jsonb;
    ch    jsonb;
    actor text := nullif(current_setting('rowcast.actor_id', true), '');
    req   text := nullif(current_setting('rowcast.request_id', true), '');
BEGIN
    IF TG_OP = 'DELETE' OR NEW."user_id" IS NULL THEN RETURN NULL; END IF;
    n := to_jsonb(NEW);
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, user_id, actor, request_id, row_data, changes, old_data)
        VALUES ('user:' || NEW."user_id"::text, 'public.ai_tasks', 'I', NEW."id"::text, NEW."team_id"::text, NEW."user_id"::text, coalesce(actor, NEW."user_id"::text), req, n, NULL, NULL);
    ELSE
        o := to_jsonb(OLD);
        SELECT jsonb_object_agg(e.key, e.value) INTO ch
        FROM jsonb_each(n) e WHERE o -> e.key IS DISTINCT FROM e.value;
        IF ch IS NULL THEN RETURN NULL; END IF;
        IF NEW."status"::text IN ('completed', 'failed') THEN
            DELETE FROM rowcast.task_progress WHERE tbl = 'public.ai_tasks' AND id = NEW."id"::text;
            hw := greatest(NEW."progress", OLD."progress");
        ELSE
            INSERT INTO rowcast.task_progress AS p (tbl, id, high)
            VALUES ('public.ai_tasks', NEW."id"::text, greatest(NEW."progress", OLD."progress"))
            ON CONFLICT (tbl, id) DO UPDATE SET high = greatest(p.high, excluded.high)
            RETURNING p.high INTO hw;
        END IF;
        INSERT INTO rowcast.changelog (stream, tbl, op, entity_id, team_id, user_id, actor, request_id, row_data, changes, old_data)
        VALUES ('user:' || NEW."user_id"::text, 'public.ai_tasks', 'U', NEW."id"::text, NEW."team_id"::text, NEW."user_id"::text, coalesce(actor, NEW."user_id"::text), req, n, ch, jsonb_build_object('status', OLD."status", 'progress', hw));
    END IF;
    IF current_setting('rowcast.marked', true) IS DISTINCT FROM '1' THEN PERFORM rowcast.mark(); END IF;
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION rowcast."capture__public__ai_tasks"() FROM PUBLIC;
COMMENT ON FUNCTION rowcast."capture__public__ai_tasks"() IS 'rowcast sha256:0b0c554142032650bf8f883f';
DROP TRIGGER IF EXISTS rowcast_capture ON "public"."ai_tasks";
CREATE TRIGGER rowcast_capture AFTER INSERT OR UPDATE OR DELETE ON "public"."ai_tasks" FOR EACH ROW EXECUTE FUNCTION rowcast."capture__public__ai_tasks"();
DROP TRIGGER IF EXISTS rowcast_truncate ON "public"."ai_tasks";
CREATE TRIGGER rowcast_truncate AFTER TRUNCATE ON "public"."ai_tasks" FOR EACH STATEMENT EXECUTE FUNCTION rowcast.truncated();


CREATE OR REPLACE FUNCTION rowcast.task_start(p_user text, p_team text, p_type text, p_params jsonb DEFAULT '{}', p_message text DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_id text;
BEGIN
    INSERT INTO "public"."ai_tasks" ("user_id", "team_id", "task_type", "status", "progress", "message", "params")
    SELECT r."user_id", r."team_id", r."task_type", 'running', 0, p_message, coalesce(p_params, '{}'::jsonb)
    FROM jsonb_populate_record(NULL::"public"."ai_tasks", jsonb_build_object('user_id', p_user, 'team_id', p_team, 'task_type', p_type)) r
    RETURNING "id"::text INTO v_id;
    RETURN v_id::uuid;
END
$fn$;

CREATE OR REPLACE FUNCTION rowcast.task_progress(p_id uuid, p_percent integer, p_message text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_id "public"."ai_tasks"."id"%TYPE := (jsonb_populate_record(NULL::"public"."ai_tasks", jsonb_build_object('id', p_id::text)))."id";
BEGIN
    UPDATE "public"."ai_tasks" SET "status" = 'running', "progress" = least(greatest(p_percent, 0), 100), "message" = coalesce(p_message, "message")
    WHERE "id" = v_id AND "status" IN ('pending', 'running');
END
$fn$;

CREATE OR REPLACE FUNCTION rowcast.task_complete(p_id uuid, p_result jsonb DEFAULT NULL, p_message text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_id "public"."ai_tasks"."id"%TYPE := (jsonb_populate_record(NULL::"public"."ai_tasks", jsonb_build_object('id', p_id::text)))."id";
BEGIN
    UPDATE "public"."ai_tasks" SET "status" = 'completed', "progress" = 100, "result" = (jsonb_populate_record(NULL::"public"."ai_tasks", jsonb_build_object('result', p_result)))."result", "message" = coalesce(p_message, "message")
    WHERE "id" = v_id AND "status" IN ('pending', 'running');
END
$fn$;

CREATE OR REPLACE FUNCTION rowcast.task_fail(p_id uuid, p_error text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_id "public"."ai_tasks"."id"%TYPE := (jsonb_populate_record(NULL::"public"."ai_tasks", jsonb_build_object('id', p_id::text)))."id";
BEGIN
    UPDATE "public"."ai_tasks" SET "status" = 'failed', "error" = p_error
    WHERE "id" = v_id AND "status" IN ('pending', 'running');
END
$fn$;

GRANT EXECUTE ON FUNCTION rowcast.task_start(text, text, text, jsonb, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION rowcast.task_progress(uuid, integer, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION rowcast.task_complete(uuid, jsonb, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION rowcast.task_fail(uuid, text) TO PUBLIC;

