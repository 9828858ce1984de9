package aitask

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Lead is one row of a leads CSV.
type Lead struct {
	FirstName, LastName, Email, Phone string
}

// MaxLeadRows is the most rows one import_leads_csv task takes.
const MaxLeadRows = 10_000

// The columns a leads CSV may have, in Lead's order; first_name and email
// are required.
const (
	colFirstName = iota
	colLastName
	colEmail
	colPhone
	leadColumns // how many there are
)

// leadColumnNames lists the columns for messages.
const leadColumnNames = "first_name, last_name, email, phone"

// leadColumn returns the column named name, or -1.
func leadColumn(name string) int {
	for i, c := range strings.Split(leadColumnNames, ", ") {
		if c == name {
			return i
		}
	}
	return -1
}

// leadSheet is a leads CSV whose header and syntax were read; its rows are
// checked one by one by lead.
type leadSheet struct {
	col  [leadColumns]int // index of each column in a row, -1 when absent
	n    int              // fields per row
	rows [][]string
}

// readLeadSheet reads the header and the rows of a leads CSV. Rows are
// numbered from 1 after the header, and errors name them ("row 4: …").
func readLeadSheet(doc string) (*leadSheet, error) {
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(doc, "\uFEFF")))
	r.FieldsPerRecord = -1 // counted by lead, which names the row
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("csv: empty, want a header line such as first_name,last_name,email")
	}
	if err != nil {
		return nil, fmt.Errorf("csv header: %w", err)
	}
	s := &leadSheet{n: len(header)}
	for i := range s.col {
		s.col[i] = -1
	}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		k := leadColumn(name)
		switch {
		case k < 0:
			return nil, fmt.Errorf("csv header: unknown column %q (want %s)", h, leadColumnNames)
		case s.col[k] >= 0:
			return nil, fmt.Errorf("csv header: column %q twice", name)
		}
		s.col[k] = i
	}
	if s.col[colFirstName] < 0 {
		return nil, errors.New("csv header: no first_name column")
	}
	if s.col[colEmail] < 0 {
		return nil, errors.New("csv header: no email column")
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("row %d: %w", len(s.rows)+1, err)
		}
		if len(s.rows) == MaxLeadRows {
			return nil, fmt.Errorf("csv: more than %d rows", MaxLeadRows)
		}
		s.rows = append(s.rows, rec)
	}
	if len(s.rows) == 0 {
		return nil, errors.New("csv: no rows after the header")
	}
	return s, nil
}

// lead checks row i (from 0) and returns its lead.
func (s *leadSheet) lead(i int) (Lead, error) {
	rec := s.rows[i]
	if len(rec) != s.n {
		return Lead{}, fmt.Errorf("row %d: %d fields, want %d", i+1, len(rec), s.n)
	}
	var v [leadColumns]string
	for k, c := range s.col {
		if c >= 0 {
			v[k] = strings.TrimSpace(rec[c])
		}
	}
	l := Lead{FirstName: v[colFirstName], LastName: v[colLastName], Email: v[colEmail], Phone: v[colPhone]}
	switch {
	case l.FirstName == "":
		return Lead{}, fmt.Errorf("row %d: no first_name", i+1)
	case l.Email == "":
		return Lead{}, fmt.Errorf("row %d: no email", i+1)
	case !validEmail(l.Email):
		return Lead{}, fmt.Errorf("row %d: invalid email %q", i+1, l.Email)
	}
	return l, nil
}

// validEmail reports whether s is a bare address (no display name) whose
// domain has a dot: "maya@example.com".
func validEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return false
	}
	_, domain, _ := strings.Cut(s, "@")
	return strings.Contains(strings.Trim(domain, "."), ".")
}

// ParseLeads reads a leads CSV: a header naming first_name and email and
// optionally last_name and phone, in any order, then at most MaxLeadRows
// rows, each with as many fields as the header, a first name and a valid
// email. It returns every lead, or the first problem, naming the row
// (counted from 1 after the header): `row 4: invalid email "x"`.
func ParseLeads(doc string) ([]Lead, error) {
	s, err := readLeadSheet(doc)
	if err != nil {
		return nil, err
	}
	leads := make([]Lead, len(s.rows))
	for i := range s.rows {
		if leads[i], err = s.lead(i); err != nil {
			return nil, err
		}
	}
	return leads, nil
}

// importLeads runs an import_leads_csv task: read the CSV, check it row by
// row, reporting each row (at most one progress write per percent), then
// insert every lead and complete the task in one transaction. A bad row
// fails the task naming the row, and no lead is imported: the import is
// all or nothing.
func (r *Runner) importLeads(ctx context.Context, t *task) error {
	if err := r.progress(ctx, t, 5, "Reading the CSV"); err != nil {
		return err
	}
	if err := r.work(ctx); err != nil {
		return err
	}
	var p struct {
		CSV *string `json:"csv"`
	}
	if err := json.Unmarshal(t.params, &p); err != nil {
		return fail("params: %v", err)
	}
	if p.CSV == nil {
		return fail("params: no csv")
	}
	sheet, err := readLeadSheet(*p.CSV)
	if err != nil {
		return &Failure{Reason: err.Error()}
	}
	n := len(sheet.rows)
	leads := make([]Lead, n)
	last := 5
	for i := range sheet.rows {
		if leads[i], err = sheet.lead(i); err != nil {
			return fail("%v; no leads were imported", err)
		}
		if pct := 5 + 90*(i+1)/n; pct > last {
			last = pct
			if err := r.progress(ctx, t, pct, "Processed row "+strconv.Itoa(i+1)+"/"+strconv.Itoa(n)); err != nil {
				return err
			}
			if err := r.work(ctx); err != nil {
				return err
			}
		}
	}
	return r.commit(ctx, t, func(tx pgx.Tx) (any, string, error) {
		for _, l := range leads {
			_, err := tx.Exec(ctx, `insert into leads (team_id, first_name, last_name, email, phone, source, updated_by)
				values ($1::bigint, $2, nullif($3, ''), $4, nullif($5, ''), 'csv_import', $6::bigint)`,
				t.team, l.FirstName, l.LastName, l.Email, l.Phone, t.user)
			if err != nil {
				return nil, "", fmt.Errorf("insert lead: %w", err)
			}
		}
		msg := "Imported " + strconv.Itoa(n) + " leads"
		if n == 1 {
			msg = "Imported 1 lead"
		}
		return map[string]int{"imported": n}, msg, nil
	})
}
