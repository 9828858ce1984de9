package server

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/config"
)

// membershipReader reads a user's teams from the auth.membership table.
// The user id is cast to the user column's type, read from the catalog at
// the first read (and again after a failure), so that an index on the
// column serves the lookup.
type membershipReader struct {
	pool *pgxpool.Pool
	m    config.Membership

	mu    sync.Mutex
	query string // "" until the column's type is known
}

func newMembershipReader(pool *pgxpool.Pool, m config.Membership) *membershipReader {
	return &membershipReader{pool: pool, m: m.WithDefaults()}
}

// Teams returns the teams of user as text, as the capture writes them
// (the team column cast to text), each once. A user id the column's type
// cannot hold (letters for a bigint) belongs to no team.
func (r *membershipReader) Teams(ctx context.Context, user string) ([]string, error) {
	q, err := r.prepared(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := r.pool.Query(ctx, q, user)
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	teams, err := pgx.CollectRows(rows, pgx.RowTo[string])
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.InvalidTextRepresentation || pgErr.Code == pgerrcode.NumericValueOutOfRange) {
		return []string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	return teams, nil
}

func (r *membershipReader) prepared(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.query != "" {
		return r.query, nil
	}
	t := config.Table{Table: r.m.Table}
	table := pgx.Identifier{t.Schema(), t.Name()}.Sanitize()
	var typ string
	err := r.pool.QueryRow(ctx, `select format_type(a.atttypid, a.atttypmod) from pg_attribute a
where a.attrelid = to_regclass($1) and a.attname = $2 and not a.attisdropped`, table, r.m.UserColumn).Scan(&typ)
	if err != nil {
		return "", fmt.Errorf("membership: the type of %s.%s: %w", t.Qualified(), r.m.UserColumn, err)
	}
	user, team := pgx.Identifier{r.m.UserColumn}.Sanitize(), pgx.Identifier{r.m.TeamColumn}.Sanitize()
	// The user column's text must be the user id itself: membership
	// changes go to the stream of that text (the capture writes
	// user::text), so a user id that only casts to it ('02', an
	// upper-case uuid) would be read into teams whose leaves it never sees.
	r.query = fmt.Sprintf("select distinct %s::text from %s where %s = $1::text::%s and %s::text = $1::text and %s is not null",
		team, table, user, typ, user, team)
	return r.query, nil
}
