package changelog_test

import (
	"os"
	"testing"

	"github.com/rowcast/rowcast/relay/pgtest"
)

var pg pgtest.Server

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg)) }
