package server_test

import (
	"encoding/json"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/rowcast/rowcast/config"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// metric returns the value of a counter or gauge gathered from the
// relay's registry (the sum of its series), or -1 when it is not there.
func metric(t *testing.T, e *env, name string) float64 {
	t.Helper()
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return familyValue(families, name)
}

// familyValue returns the value of the counter or gauge name in families
// (the sum of its series: rowcast_sessions of both transports), or -1.
func familyValue(families []*dto.MetricFamily, name string) float64 {
	for _, f := range families {
		if f.GetName() != name || len(f.GetMetric()) == 0 {
			continue
		}
		sum := 0.0
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			default:
				return -1
			}
		}
		return sum
	}
	return -1
}

// A token without the team claim is welcomed, told so, and counted; a
// token with the claim is not.
func TestTokenWithoutTeamClaimIsToldInWelcome(t *testing.T) {
	e := startRelay(t, nil)
	c, err := e.dial(token(t, map[string]any{"sub": "5", "team_id": 1}), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		Type    string   `json:"type"`
		TeamIDs []string `json:"teamIds"`
		Warning string   `json:"warning"`
	}
	f := c.next()
	if err := jsonUnmarshal(f.Raw, &w); err != nil || w.Type != "welcome" {
		t.Fatalf("want welcome, got %s", f.Raw)
	}
	if len(w.TeamIDs) != 0 || w.Warning == "" {
		t.Fatalf("welcome %s: want no teams and a warning", f.Raw)
	}
	if n := metric(t, e, "rowcast_sessions_without_team_claim_total"); n != 1 {
		t.Fatalf("rowcast_sessions_without_team_claim_total = %v, want 1", n)
	}
	c2, err := e.dial(userToken(t, "5"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	f = c2.next()
	w.Warning = ""
	if err := jsonUnmarshal(f.Raw, &w); err != nil || w.Type != "welcome" || w.Warning != "" {
		t.Fatalf("a token with an empty team list: got %s, want a welcome without warning", f.Raw)
	}
	if n := metric(t, e, "rowcast_sessions_without_team_claim_total"); n != 1 {
		t.Fatalf("rowcast_sessions_without_team_claim_total = %v, want still 1", n)
	}
}

// A team named by an upper-case UUID in the token gets the events of that
// team, whose uuid column PostgreSQL renders in lower case.
func TestUpperCaseUUIDTeamClaimMatches(t *testing.T) {
	e := startRelay(t, func(c *config.Config) {
		c.Tables = append(c.Tables, config.Table{Table: "deals", Entity: "deal", Kind: "entity", IDColumn: "id", TeamColumn: "org"})
	}, `create table deals (id bigserial primary key, org uuid not null, title text)`)
	const org = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
	c := e.connect(token(t, map[string]any{"sub": "5", "teamId": org}))
	e.exec("insert into deals (org, title) values ($1, 'big one')", org)
	f := c.event("deal:created")
	if got := f.data()["teamId"]; got != strings.ToLower(org) {
		t.Fatalf("teamId %v, want %s", got, strings.ToLower(org))
	}
}

// A client message with a field of the wrong type is answered in the
// protocol's terms: the field, what it must be, what it was; no Go names.
func TestWrongFieldTypeSaysWhichField(t *testing.T) {
	e := startRelay(t, nil)
	c := e.connect(userToken(t, "2", 1))
	for msg, want := range map[string]string{
		`{"type":"resume","since":5}`:         `field "since" must be a string, not number`,
		`{"type":"subscribe","entities":"x"}`: `field "entities" must be a list of strings, not string`,
		`{"type":"subscribe","entities":[1]}`: `field "entities" must be a list of strings, not number`,
		`{"type":7}`:                          `field "type" must be a string, not number`,
	} {
		c.send(msg)
		f := c.next()
		if f.Type != "error" || f.Code != "bad_request" || f.Message != want {
			t.Errorf("%s: got %s, want bad_request %q", msg, f.Raw, want)
		}
		if strings.Contains(f.Message, "Go") || strings.Contains(f.Message, "clientMessage") {
			t.Errorf("%s: %q names Go types", msg, f.Message)
		}
	}
}
