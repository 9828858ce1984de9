package floor

import (
	"strings"
	"testing"
)

func TestPayloadTeam(t *testing.T) {
	for _, tt := range []struct {
		payload string
		team    int64
		ok      bool
	}{
		{`{"team":12,"row":{}}`, 12, true},
		{`{"team":,"row":{}}`, 0, false},
		{`{"row":{},"team":1}`, 0, false},
		{``, 0, false},
	} {
		team, ok := payloadTeam(tt.payload)
		if team != tt.team || ok != tt.ok {
			t.Errorf("payloadTeam(%q) = %d, %v; want %d, %v", tt.payload, team, ok, tt.team, tt.ok)
		}
	}
}

func TestTriggerSQLQuotesNames(t *testing.T) {
	sql := TriggerSQL("my table", "team_id")
	if !strings.Contains(sql, `on "my table"`) || !strings.Contains(sql, `NEW."team_id"`) {
		t.Errorf("names not quoted:\n%s", sql)
	}
}
