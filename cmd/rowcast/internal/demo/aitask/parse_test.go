package aitask

import (
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in   string
		want Address
		err  string
	}{
		{in: "12 Oak St, Austin, TX 78701", want: Address{"12 Oak St", "Austin", "TX", "78701"}},
		{in: "  12B  Oak St ,San Diego,  ca 92101-1234 ", want: Address{"12B Oak St", "San Diego", "CA", "92101-1234"}},
		{in: "12-14 Harbor Blvd, Apt 4, Portland, OR 97201", want: Address{"12-14 Harbor Blvd, Apt 4", "Portland", "OR", "97201"}},
		{in: "Oak St, Austin, TX 78701", err: `address "Oak St, Austin, TX 78701": no street number`},
		{in: "One Oak St, Austin, TX 78701", err: "no street number"},
		{in: "12AB Oak St, Austin, TX 78701", err: "no street number"},
		{in: "12-B Oak St, Austin, TX 78701", err: "no street number"},
		{in: "12, Austin, TX 78701", err: "no street name"},
		{in: "12 Oak St, Austin", err: `address "12 Oak St, Austin": no state and zip code`},
		{in: "12 Oak St Austin TX 78701", err: "no state and zip code"},
		{in: "12 Oak St, TX 78701", err: "no city"},
		{in: "12 Oak St, 123, TX 78701", err: "no city"},
		{in: "12 Oak St, Austin, 78701", err: "no state"},
		{in: "12 Oak St, Austin, TX", err: "no zip code"},
		{in: "12 Oak St, Austin, XX 78701", err: `unknown state "XX"`},
		{in: "12 Oak St, Austin, TX 7870", err: `bad zip code "7870"`},
		{in: "12 Oak St, Austin, Texas", err: `"Texas" is not a state and a zip code`},
		{in: " , ", err: "empty"},
	}
	for _, tt := range tests {
		got, err := ParseAddress(tt.in)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("ParseAddress(%q): %v", tt.in, err)
		case tt.err == "" && got != tt.want:
			t.Errorf("ParseAddress(%q) = %+v, want %+v", tt.in, got, tt.want)
		case tt.err != "" && (err == nil || !strings.HasSuffix(err.Error(), tt.err)):
			t.Errorf("ParseAddress(%q) = %+v, %v; want an error ending %q", tt.in, got, err, tt.err)
		}
	}
}

func TestParseEscrowParams(t *testing.T) {
	tests := []struct{ in, price, err string }{
		{in: `{"address":"12 Oak St, Austin, TX 78701","price":450000}`, price: "450000.00"},
		{in: `{"address":"12 Oak St, Austin, TX 78701","price":"450000.5"}`, price: "450000.50"},
		{in: `{"address":"12 Oak St, Austin, TX 78701","price":9999999999.99}`, price: "9999999999.99"},
		{in: `{"address":"12 Oak St, Austin, TX 78701"}`, err: "params: no price"},
		{in: `{"price":1}`, err: "params: no address"},
		{in: `{"address":"Oak St, Austin, TX 78701","price":1}`, err: `address "Oak St, Austin, TX 78701": no street number`},
		{in: `{"address":"12 Oak St, Austin, TX 78701","price":0}`, err: "price 0: want more than 0 and at most 9999999999.99"},
		{in: `{"address":"12 Oak St, Austin, TX 78701","price":-5}`, err: "price -5: not a number of dollars"},
		{in: `{"address":"12 Oak St, Austin, TX 78701","price":1e6}`, err: "price 1e6: not a number of dollars"},
		{in: `{"address":"12 Oak St, Austin, TX 78701","price":"lots"}`, err: `price "lots": not a number of dollars`},
		{in: `{"address":"12 Oak St, Austin, TX 78701","price":10000000000}`, err: "price 10000000000: want more than 0 and at most"},
		{in: `{"address":12}`, err: "params: json: cannot unmarshal"},
		{in: `[]`, err: "params: json: cannot unmarshal array"},
	}
	for _, tt := range tests {
		got, err := ParseEscrowParams([]byte(tt.in))
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%s: %v", tt.in, err)
		case tt.err == "" && got.Price != tt.price:
			t.Errorf("%s: price %q, want %q", tt.in, got.Price, tt.price)
		case tt.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.err)):
			t.Errorf("%s: %+v, %v; want an error starting %q", tt.in, got, err, tt.err)
		}
	}
}

func TestParseLeads(t *testing.T) {
	got, err := ParseLeads("\uFEFFEmail, First_Name ,last_name,phone\n" +
		"maya@example.com,Maya,Chen,555-0100\n" +
		"\n" + // blank lines are skipped
		"\"noah@example.com\",\" Noah \",,\n" +
		"zoe@example.co.uk,\"Zoe, Jr.\",\"Silva\nda Costa\",\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []Lead{
		{FirstName: "Maya", LastName: "Chen", Email: "maya@example.com", Phone: "555-0100"},
		{FirstName: "Noah", Email: "noah@example.com"},
		{FirstName: "Zoe, Jr.", LastName: "Silva\nda Costa", Email: "zoe@example.co.uk"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d leads %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("lead %d = %+v, want %+v", i+1, got[i], want[i])
		}
	}

	const head = "first_name,last_name,email\n"
	ok := "Maya,Chen,maya@example.com\n"
	errs := []struct{ in, err string }{
		{head + ok + ok + ok + "Zoe,Silva,x\n", `row 4: invalid email "x"`},
		{head + ok + "Noah,noah@example.com\n", "row 2: 2 fields, want 3"},
		{head + ok + "Noah,Kim,noah@example.com,extra\n", "row 2: 4 fields, want 3"},
		{head + ",Kim,noah@example.com\n", "row 1: no first_name"},
		{head + "Noah,Kim, \n", "row 1: no email"},
		{head + "Noah,Kim,Noah <noah@example.com>\n", `row 1: invalid email "Noah <noah@example.com>"`},
		{head + "Noah,Kim,noah@localhost\n", `row 1: invalid email "noah@localhost"`},
		{head + "Noah,Kim,noah@@example.com\n", `row 1: invalid email "noah@@example.com"`},
		{head + ok + "Noah,K\"im,noah@example.com\n", `row 2: parse error on line 3, column 7: bare " in non-quoted-field`},
		{head, "csv: no rows after the header"},
		{"", "csv: empty"},
		{"first_name,last_name\nMaya,Chen\n", "csv header: no email column"},
		{"email\nmaya@example.com\n", "csv header: no first_name column"},
		{"first_name,email,fax\n", `csv header: unknown column "fax" (want first_name, last_name, email, phone)`},
		{"first_name,email,Email\n", `csv header: column "email" twice`},
		{head + strings.Repeat(ok, MaxLeadRows+1), "csv: more than 10000 rows"},
	}
	for _, tt := range errs {
		leads, err := ParseLeads(tt.in)
		if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
			name := tt.in
			if len(name) > 80 {
				name = name[:80] + "…"
			}
			t.Errorf("ParseLeads(%q) = %d leads, %v; want an error starting %q", name, len(leads), err, tt.err)
		}
	}
	if leads, err := ParseLeads(head + strings.Repeat(ok, MaxLeadRows)); err != nil || len(leads) != MaxLeadRows {
		t.Errorf("%d rows: %d leads, %v", MaxLeadRows, len(leads), err)
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"12 Oak St, Austin, TX 78701", "Oak St, Austin", "12-14 A, B, C, ny 12345-6789", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "address ") {
				t.Errorf("error %q does not name the address", err)
			}
			return
		}
		if !streetNumber(strings.Fields(a.Street)[0]) || a.City == "" || len(a.State) != 2 || len(a.Zip) != 5 && len(a.Zip) != 10 {
			t.Errorf("ParseAddress(%q) = %+v", s, a)
		}
		// The parts read back as the same address.
		if b, err := ParseAddress(a.Street + ", " + a.City + ", " + a.State + " " + a.Zip); err != nil || b != a {
			t.Errorf("round trip of %+v: %+v, %v", a, b, err)
		}
	})
}

func FuzzParseLeads(f *testing.F) {
	for _, s := range []string{"first_name,email\nA,a@b.co\n", "email,first_name\n\"x\",\"y\"\n", "first_name,email\nA,\"a@b.co\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		leads, err := ParseLeads(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "row ") && !strings.HasPrefix(err.Error(), "csv") {
				t.Errorf("error %q names neither a row nor the csv", err)
			}
			return
		}
		if len(leads) == 0 {
			t.Error("no leads and no error")
		}
		for _, l := range leads {
			if l.FirstName == "" || !validEmail(l.Email) {
				t.Errorf("lead %+v passed", l)
			}
		}
	})
}
