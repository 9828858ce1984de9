package logical

import (
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestPublicationMissing: only undefined_object from the replication
// connection means a missing publication; the same SQLSTATE from the
// connection that writes the changelog is an apply failure.
func TestPublicationMissing(t *testing.T) {
	undefined := func(msg string) error { return &pgconn.PgError{Code: pgerrcode.UndefinedObject, Message: msg} }
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"replication receive", fmt.Errorf("logical receive: %w", &replicationError{undefined(`publication "rowcast" does not exist`)}), true},
		{"start replication", fmt.Errorf("logical start replication: %w", &replicationError{undefined("x")}), true},
		{"after progress", fmt.Errorf("%w: %w", errProgress, fmt.Errorf("logical receive: %w", &replicationError{undefined("x")})), true},
		{"apply", fmt.Errorf("logical apply: %w", undefined(`type "mood" does not exist`)), false},
		{"apply after progress", fmt.Errorf("%w: %w", errProgress, fmt.Errorf("logical apply commit: %w", undefined("x"))), false},
		{"replication, another SQLSTATE", &replicationError{&pgconn.PgError{Code: pgerrcode.UndefinedTable}}, false},
		{"replication, not a PostgreSQL error", &replicationError{io.EOF}, false},
		{"nil", nil, false},
	} {
		if got := publicationMissing(tc.err); got != tc.want {
			t.Errorf("%s: publicationMissing(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestReplicationConfig(t *testing.T) {
	cfg, err := pgconn.ParseConfig("postgres://u@localhost:5432/db?application_name=relay")
	if err != nil {
		t.Fatal(err)
	}
	rc := ReplicationConfig(cfg)
	if rc.RuntimeParams["replication"] != "database" || rc.RuntimeParams["application_name"] != "relay" {
		t.Errorf("runtime params %v, want replication=database and the URL's own", rc.RuntimeParams)
	}
	if _, ok := cfg.RuntimeParams["replication"]; ok {
		t.Error("ReplicationConfig changed the configuration it was given")
	}
	if rc.Database != "db" || rc.User != "u" {
		t.Errorf("database %q user %q", rc.Database, rc.User)
	}
}
