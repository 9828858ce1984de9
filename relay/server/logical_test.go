package server_test

import (
	"testing"

	"github.com/rowcast/rowcast/config"
)

func logicalMode(c *config.Config) { c.Capture.Mode = config.ModeLogical }

func TestLogicalBasicEvents(t *testing.T) {
	e := startRelay(t, logicalMode)
	c := e.connect(userToken(t, "2", 1))
	e.exec("insert into leads (team_id, first_name, updated_by) values (1, 'Noah', 2)")
	f := c.event("lead:created")
	t.Logf("%s", f.raw)
	e.exec("update leads set score = 5 where first_name = 'Noah'")
	f = c.event("lead:updated")
	t.Logf("%s", f.raw)
	e.exec("delete from leads")
	f = c.event("lead:deleted")
	t.Logf("%s", f.raw)
	e.exec("truncate notes")
	f = c.next()
	t.Logf("%s", f.raw)
}
