package aitask

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Address is a US street address as an escrow records it.
type Address struct {
	Street string // "12 Oak St", with its street number
	City   string // "Austin"
	State  string // "TX", two upper-case letters of a US state, DC or PR
	Zip    string // "78701" or "78701-1234"
}

// ParseAddress reads "<number> <street>, <city>, <state> <zip>", e.g.
// "12 Oak St, Austin, TX 78701" (a second street line such as "Apt 4"
// may follow the street). Its errors quote the address and name the first
// part that is missing or wrong: `address "Oak St, Austin, TX 78701": no
// street number`.
func ParseAddress(s string) (Address, error) {
	bad := func(reason string) (Address, error) {
		return Address{}, fmt.Errorf("address %q: %s", s, reason)
	}
	var parts []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.Join(strings.Fields(p), " "); p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return bad("empty")
	}
	words := strings.Fields(parts[0])
	if !streetNumber(words[0]) {
		return bad("no street number")
	}
	if len(words) < 2 {
		return bad("no street name")
	}
	if len(parts) < 3 {
		if len(parts) == 2 {
			if _, _, err := stateZip(parts[1]); err == nil {
				return bad("no city")
			}
		}
		return bad("no state and zip code")
	}
	a := Address{Street: strings.Join(parts[:len(parts)-2], ", "), City: parts[len(parts)-2]}
	if !strings.ContainsFunc(a.City, isLetter) {
		return bad("no city")
	}
	var err error
	if a.State, a.Zip, err = stateZip(parts[len(parts)-1]); err != nil {
		return bad(err.Error())
	}
	return a, nil
}

// streetNumber reports whether w is a house number: digits with an optional
// letter ("12", "12B") or a range ("12-14").
func streetNumber(w string) bool {
	for i, half := range strings.SplitN(w, "-", 2) {
		digits := strings.TrimRightFunc(half, isLetter)
		if digits == "" || len(half)-len(digits) > 1 || (i == 1 && half != digits) {
			return false
		}
		for _, r := range digits {
			if r < '0' || r > '9' {
				return false
			}
		}
	}
	return true
}

func isLetter(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' }

// states are the US state codes, DC and PR.
const states = "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK OR PA PR RI SC SD TN TX UT VT VA WA WV WI WY"

// decimal reports whether s is digits with an optional fraction: "450000",
// "450000.5".
func decimal(s string) bool {
	whole, frac, dot := strings.Cut(s, ".")
	digits := func(d string) bool {
		return d != "" && strings.Trim(d, "0123456789") == ""
	}
	return digits(whole) && (!dot || digits(frac))
}

// stateZip reads "TX 78701".
func stateZip(s string) (state, zip string, err error) {
	f := strings.Fields(s)
	isZip := func(z string) bool {
		if len(z) == 10 && z[5] == '-' {
			z = z[:5] + z[6:]
		} else if len(z) != 5 {
			return false
		}
		for _, r := range z {
			if r < '0' || r > '9' {
				return false
			}
		}
		return true
	}
	isState := func(w string) bool {
		return len(w) == 2 && strings.Contains(" "+states+" ", " "+strings.ToUpper(w)+" ")
	}
	switch {
	case len(f) == 1 && isZip(f[0]):
		return "", "", errors.New("no state")
	case len(f) == 1 && isState(f[0]):
		return "", "", errors.New("no zip code")
	case len(f) != 2:
		return "", "", fmt.Errorf("%q is not a state and a zip code", s)
	case !isState(f[0]):
		return "", "", fmt.Errorf("unknown state %q", f[0])
	case !isZip(f[1]):
		return "", "", fmt.Errorf("bad zip code %q", f[1])
	}
	return strings.ToUpper(f[0]), f[1], nil
}

// EscrowParams are the checked params of a create_escrow_from_address task.
type EscrowParams struct {
	Address Address
	// Price is the purchase price in dollars, as a decimal numeral for a
	// numeric(12, 2) column.
	Price string
}

// maxPrice is the largest purchase price numeric(12, 2) holds.
const maxPrice = 9_999_999_999.99

// ParseEscrowParams checks the params of a create_escrow_from_address task:
// {"address": "<as ParseAddress reads>", "price": <a positive number of
// dollars, or a string holding one>}.
func ParseEscrowParams(raw []byte) (EscrowParams, error) {
	var p struct {
		Address *string          `json:"address"`
		Price   *json.RawMessage `json:"price"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return EscrowParams{}, fmt.Errorf("params: %w", err)
	}
	if p.Address == nil {
		return EscrowParams{}, errors.New("params: no address")
	}
	a, err := ParseAddress(*p.Address)
	if err != nil {
		return EscrowParams{}, err
	}
	if p.Price == nil {
		return EscrowParams{}, errors.New("params: no price")
	}
	price := string(*p.Price)
	if unq, err := strconv.Unquote(price); err == nil {
		price = strings.TrimSpace(unq)
	}
	v, err := strconv.ParseFloat(price, 64)
	if err != nil || !decimal(price) {
		return EscrowParams{}, fmt.Errorf("price %s: not a number of dollars", *p.Price)
	}
	if v <= 0 || v > maxPrice {
		return EscrowParams{}, fmt.Errorf("price %s: want more than 0 and at most %.2f", *p.Price, maxPrice)
	}
	return EscrowParams{Address: a, Price: strconv.FormatFloat(v, 'f', 2, 64)}, nil
}

// createEscrow runs a create_escrow_from_address task: validate the
// address, look the property up among the team's listings, draft the
// escrow, assign it to the user, then create it and complete the task in
// one transaction.
func (r *Runner) createEscrow(ctx context.Context, t *task) error {
	if err := r.progress(ctx, t, 10, "Validating the address"); err != nil {
		return err
	}
	if err := r.work(ctx); err != nil {
		return err
	}
	p, err := ParseEscrowParams(t.params)
	if err != nil {
		return &Failure{Reason: err.Error()}
	}
	a := p.Address

	if err := r.progress(ctx, t, 30, "Looking up "+a.Street+" in the listings"); err != nil {
		return err
	}
	if err := r.work(ctx); err != nil {
		return err
	}
	var listingID *int64
	var mls *string
	err = r.Pool.QueryRow(ctx, `select id, mls_number from listings
		where team_id = $1::bigint and lower(street_address) = lower($2) and lower(city) = lower($3)
		order by id desc limit 1`, t.team, a.Street, a.City).Scan(&listingID, &mls)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("look up listing: %w", err)
	}
	draft := "Drafting the escrow (no listing on file)"
	if listingID != nil {
		draft = "Drafting the escrow for listing " + strconv.FormatInt(*listingID, 10)
		if mls != nil {
			draft += " (MLS " + *mls + ")"
		}
	}

	if err := r.progress(ctx, t, 60, draft); err != nil {
		return err
	}
	if err := r.work(ctx); err != nil {
		return err
	}
	var name string
	if err := r.Pool.QueryRow(ctx, "select full_name from users where id = $1::bigint", t.user).Scan(&name); err != nil {
		return fmt.Errorf("look up user: %w", err)
	}

	if err := r.progress(ctx, t, 85, "Assigning the escrow to "+name); err != nil {
		return err
	}
	if err := r.work(ctx); err != nil {
		return err
	}
	return r.commit(ctx, t, func(tx pgx.Tx) (any, string, error) {
		var id int64
		err := tx.QueryRow(ctx, `insert into escrows (team_id, listing_id, property_address, city, state, zip_code,
			purchase_price, earnest_money, commission_rate, closing_date, details, notes, updated_by)
			values ($1::bigint, $2, $3, $4, $5, $6, $7::numeric, round($7::numeric / 100, 2), 2.5, current_date + 30,
			jsonb_build_object('source', 'ai_task', 'taskId', $8::text), 'Opened by the AI assistant', $9::bigint)
			returning id`,
			t.team, listingID, a.Street, a.City, a.State, a.Zip, p.Price, t.id, t.user).Scan(&id)
		if err != nil {
			return nil, "", fmt.Errorf("insert escrow: %w", err)
		}
		return map[string]string{"escrowId": strconv.FormatInt(id, 10)}, "Escrow created", nil
	})
}
