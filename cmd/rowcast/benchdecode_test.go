package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/sql/crm"
)

func TestDecodeConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := pg.NewDatabase(t)
	if err := crm.Setup(ctx, url); err != nil {
		t.Fatal(err)
	}
	if err := seedEscrows(ctx, url); err != nil {
		t.Fatal(err)
	}
	cfg := benchConfig(url, config.ModeLogical, true)
	cfg.Capture.Slot = "decode_consumer_test" // slot names are cluster-wide
	if err := installDemo(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), "select pg_drop_replication_slot($1)", cfg.Capture.Slot)
	})
	lsn := func(sql string) pglogrepl.LSN {
		t.Helper()
		var s *string
		if err := conn.QueryRow(ctx, sql, cfg.Capture.Slot).Scan(&s); err != nil {
			t.Fatal(err)
		}
		if s == nil {
			return 0
		}
		l, err := pglogrepl.ParseLSN(*s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	if _, err := startDecodeConsumer(ctx, url, "no_such_slot", cfg.Capture.Publication); err == nil ||
		!strings.Contains(err.Error(), "decode consumer start replication") {
		t.Errorf("a missing slot: %v, want the start's error", err)
	}

	d, err := startDecodeConsumer(ctx, url, cfg.Capture.Slot, cfg.Capture.Publication)
	if err != nil {
		t.Fatal(err)
	}
	before := lsn("select pg_current_wal_insert_lsn()::text where $1::text is not null")
	if err := d.caughtUp(ctx, url); err != nil {
		t.Fatal(err)
	}
	if got := pglogrepl.LSN(d.last.Load()); got < before {
		t.Fatalf("caught up at %s, before its write at %s", got, before)
	}
	// It acknowledges what it received, so the slot holds no WAL.
	deadline := time.Now().Add(10 * time.Second)
	for lsn("select confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1") < before {
		if time.Now().After(deadline) {
			t.Fatal("the slot's confirmed position never passed the catch-up write")
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	if err := d.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
