package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// decodeConsumer streams a logical replication slot with pgoutput, as the
// slot holder does, and discards what it receives: PostgreSQL's logical
// decoding with no consumer's work on top, the floor of any relay that
// reads pgoutput (bench writepath's logical-decode variant). It
// acknowledges what it received every second and whenever the server asks,
// so the slot holds no WAL.
type decodeConsumer struct {
	// last is the start of the last XLogData message received, an LSN:
	// the position of the change or commit it carries.
	last   atomic.Uint64
	cancel context.CancelFunc
	done   chan error
}

// startDecodeConsumer connects to the database at url with a replication
// connection (application_name "rowcast walsender", as the slot holder's)
// and streams slot, filtered by publication, until stop is called.
func startDecodeConsumer(ctx context.Context, url, slot, publication string) (*decodeConsumer, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("decode consumer: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "rowcast walsender"
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("decode consumer connect: %w", err)
	}
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '2'", "publication_names '" + strings.ReplaceAll(publication, "'", "''") + "'",
			"messages 'true'", "streaming 'false'"},
	})
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("decode consumer start replication: %w", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	d := &decodeConsumer{cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := d.stream(rctx, conn)
		conn.Close(context.WithoutCancel(ctx))
		d.done <- err
	}()
	return d, nil
}

// stream receives until ctx ends (then it returns nil) or an error.
func (d *decodeConsumer) stream(ctx context.Context, conn *pgconn.PgConn) error {
	var received pglogrepl.LSN // acknowledged at the next report
	report := func() error {
		err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: received})
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("decode consumer status: %w", err)
		}
		return nil
	}
	next := time.Now().Add(time.Second)
	for {
		rctx, cancel := context.WithDeadline(ctx, next)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case pgconn.Timeout(err):
			if err := report(); err != nil {
				return err
			}
			next = time.Now().Add(time.Second)
			continue
		case err != nil:
			return fmt.Errorf("decode consumer receive: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("decode consumer: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyData:
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("decode consumer keepalive: %w", err)
				}
				received = max(received, ka.ServerWALEnd)
				if ka.ReplyRequested {
					if err := report(); err != nil {
						return err
					}
				}
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("decode consumer xlogdata: %w", err)
				}
				received = max(received, x.WALStart)
				d.last.Store(uint64(x.WALStart))
			}
		}
	}
}

// caughtUp writes one change to the table escrows of the database at url
// and waits until the consumer received it: by then it has received
// everything written before (the other variants' runs write WAL that every
// slot of the server decodes). It returns early with the stream's error.
func (d *decodeConsumer) caughtUp(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var before pglogrepl.LSN
	var s string
	if err := conn.QueryRow(ctx, "select pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		return fmt.Errorf("catch-up position: %w", err)
	}
	if before, err = pglogrepl.ParseLSN(s); err != nil {
		return fmt.Errorf("catch-up position: %w", err)
	}
	if _, err := conn.Exec(ctx, "update escrows set version = version + 1 where id = 1"); err != nil {
		return fmt.Errorf("catch-up write: %w", err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Minute)
	for pglogrepl.LSN(d.last.Load()) < before {
		select {
		case <-tick.C:
		case err := <-d.done:
			d.done <- err
			return errors.Join(errors.New("decode consumer stopped before catching up"), err)
		case <-deadline:
			return errors.New("decode consumer did not catch up within 5 minutes")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// stop ends the stream, closes its connection and returns the stream's
// error.
func (d *decodeConsumer) stop() error {
	d.cancel()
	err := <-d.done
	d.done <- err
	return err
}
