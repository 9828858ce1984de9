package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestWriteYAML(t *testing.T) {
	c := validConfig()
	c.Database.URL = "postgres://bob:hunter2-pw@db:5432/crm?sslmode=disable"
	c.Origins = []string{"https://app.example.com"}
	c.History.PruneInterval = 90 * time.Second
	var b bytes.Buffer
	if err := c.WriteYAML(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"database:\n  url: postgres://bob:*****@db:5432/crm?sslmode=disable\n",
		"  jwt_secret: '*****'\n",
		"  poll_min: 5ms\n",
		"  retention: 24h\n",
		"  prune_interval: 1m30s\n",
		"  heartbeat: 25s\n",
		"  rate_limit: 20\n",
		"origins:\n  - https://app.example.com\n",
		"  - table: escrows\n    entity: escrow\n    kind: entity\n    id_column: id\n    team_column: team_id\n  - table: ai_tasks\n",
		"    type_column: task_type\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") || strings.Contains(out, testSecret) {
		t.Errorf("output shows a secret:\n%s", out)
	}
	// Entity tables print no AI task columns.
	if strings.Count(out, "status_column") != 1 {
		t.Errorf("want status_column only for the ai_task table:\n%s", out)
	}
}

func TestWriteYAMLRoundTrip(t *testing.T) {
	src := validYAML(`  - table: deal_participants
    id_columns: [deal_id, user_id]
  - table: deal_notes
    team_from: {table: crm.deals, key: deal_id, column: organization_id}
listen: 0.0.0.0:8080
admin_listen: 127.0.0.1:9090
origins: [https://app.example.com, http://localhost:3000, https://*.example.org]
trusted_proxies: [10.0.0.0/8, 192.168.1.7]
limits:
  sessions_per_user: 5
  upgrade_rate: 2.5
capture:
  mode: logical
  notify: false
  poll_min: 1ms
  poll_max: 1m30s
events:
  legacy: true
sessions:
  rate_limit: 2.5
`)
	c, err := Load(LoadOptions{File: writeConfig(t, src)})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := c.WriteYAML(&b); err != nil {
		t.Fatal(err)
	}
	// The printed secrets are masked; supply them again from the
	// environment.
	path := filepath.Join(t.TempDir(), "printed.yaml")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := Load(LoadOptions{File: path, Env: []string{"ROWCAST_AUTH_JWT_SECRET=" + testSecret, "DATABASE_URL=" + testURL}})
	if err != nil {
		t.Fatalf("Load printed config: %v\n%s", err, b.String())
	}
	if !reflect.DeepEqual(c, again) {
		t.Errorf("round trip changed the configuration:\n%+v\n%+v", c, again)
	}
}

func TestWriteYAMLEmptySecret(t *testing.T) {
	c := Defaults()
	var b bytes.Buffer
	if err := c.WriteYAML(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "  jwt_secret: \"\"\n") || !strings.Contains(b.String(), "  url: \"\"\n") {
		t.Errorf("unset secrets should print empty:\n%s", b.String())
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"postgres://db/crm", "postgres://db/crm"},
		{"postgres://bob@db/crm", "postgres://bob@db/crm"},
		{"postgres://bob:pw@db:5432/crm?sslmode=require", "postgres://bob:*****@db:5432/crm?sslmode=require"},
		{"postgresql://bob:p%40ss@db/crm", "postgresql://bob:*****@db/crm"},
		{"postgres://bob:@db/crm", "postgres://bob:*****@db/crm"},
		{"postgres://db/crm?user=bob&password=pw&sslmode=disable", "postgres://db/crm?user=bob&password=*****&sslmode=disable"},
		{"postgres://db/crm?sslpassword=pw", "postgres://db/crm?sslpassword=*****"},
		{"postgres://db/crm?Password=pw", "postgres://db/crm?Password=*****"},
		{"postgres://db/crm?pass%77ord=pw", "postgres://db/crm?pass%77ord=*****"},
		{"postgres://bob:pw@db:bad port/crm", "*****"},
		{"host=db user=bob password=pw dbname=crm", "host=db user=bob password=***** dbname=crm"},
		{"host=db password = 'p w\\' x' dbname=crm", "host=db password = ***** dbname=crm"},
		{"host=db sslpassword=pw", "host=db sslpassword=*****"},
		{"host=db PASSWORD=pw", "host=db PASSWORD=*****"},
		{"host=db dbname=crm", "host=db dbname=crm"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestSecretsNeverShown loads configurations that carry secrets together
// with problems and checks that neither the error nor the printed
// configuration shows them.
func TestSecretsNeverShown(t *testing.T) {
	const (
		jwt      = "JWT-SECRET-VALUE"
		password = "DB-PASSWORD-VALUE"
		url      = "postgres://bob:" + password + "@db/crm?password=" + password
	)
	tests := []struct {
		name string
		file string
		env  []string
		set  map[string]string
	}{
		{
			name: "in the file, with problems",
			file: "database:\n  url: " + url + "\nauth:\n  jwt_secret: " + jwt + "\ncapture:\n  mode: x\nlisten: nope\ntables: [escrows]\n",
		},
		{
			name: "secrets of the wrong type",
			file: "database:\n  url: [" + url + "]\nauth:\n  jwt_secret: 12345678901234567890\ntables: [escrows]\n",
		},
		{
			name: "secret as a boolean",
			file: "database:\n  url: {u: " + url + "}\nauth:\n  jwt_secret: true\ntables: [escrows]\n",
		},
		{
			name: "from the environment",
			file: "tables: [escrows]\nlisten: nope\n",
			env:  []string{"ROWCAST_AUTH_JWT_SECRET=" + jwt, "DATABASE_URL=" + url},
		},
		{
			name: "from flags",
			file: "tables: [escrows]\n",
			set:  map[string]string{"auth.jwt_secret": jwt, "database.url": url, "listen": "nope"},
		},
		{
			name: "keyword/value database url",
			file: "tables: [escrows]\nlisten: nope\n",
			env:  []string{"ROWCAST_AUTH_JWT_SECRET=" + jwt, "ROWCAST_DATABASE_URL=host=db password=" + password},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(LoadOptions{File: writeConfig(t, tt.file), Env: tt.env, Set: tt.set})
			if err == nil {
				t.Fatal("Load: no error, want problems")
			}
			for _, s := range []string{jwt, password, "12345678901234567890"} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error shows %q:\n%s", s, err)
				}
			}
		})
	}

	for _, dbURL := range []string{url, "host=db password=" + password + " dbname=crm", "postgres://bob:" + password + "@[::1/crm"} {
		c := validConfig()
		c.Auth.JWTSecret = jwt + strings.Repeat("x", 32)
		c.Database.URL = dbURL
		var b bytes.Buffer
		if err := c.WriteYAML(&b); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(b.String(), jwt) || strings.Contains(b.String(), password) {
			t.Errorf("WriteYAML shows a secret:\n%s", b.String())
		}
	}
}
