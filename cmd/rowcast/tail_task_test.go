package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rowcast/rowcast/cmd/rowcast/internal/demo/aitask"
	"github.com/rowcast/rowcast/cmd/rowcast/internal/server"
	"github.com/rowcast/rowcast/config"
	"github.com/rowcast/rowcast/relay/auth"
	"github.com/rowcast/rowcast/sql/crm"
)

// tail renders the frames a real relay sends for a task the reference
// runner executes.
func TestTailRendersRealTaskEvents(t *testing.T) {
	ctx := t.Context()
	dbURL := pg.NewDatabase(t)
	if err := crm.Setup(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Database.URL, cfg.Listen, cfg.Auth.JWTSecret, cfg.Tables = dbURL, "127.0.0.1:0", cliSecret, crm.Tables()
	if err := installDemo(ctx, &cfg); err != nil {
		t.Fatal(err)
	}
	relay, err := server.New(server.Options{Config: &cfg, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- relay.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-ran; err != nil {
			t.Errorf("relay: %v", err)
		}
	}()
	select {
	case <-relay.Ready():
	case err := <-ran:
		t.Fatalf("relay did not start: %v", err)
	}
	tok, err := auth.Sign([]byte(cliSecret), map[string]any{"sub": "1", "teamId": []int{1}, "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	wsURL := "ws://" + relay.Addr() + "/ws"

	// The position before the task, from a welcome.
	conn, _, err := websocket.DefaultDialer.Dial(wsURL, http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatal(err)
	}
	var welcome struct{ Position string }
	err = conn.ReadJSON(&welcome)
	conn.Close()
	if err != nil || welcome.Position == "" {
		t.Fatalf("welcome: %+v, %v", welcome, err)
	}

	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	r := &aitask.Runner{Pool: pool}
	id, err := r.Create(ctx, "1", "1", aitask.CreateEscrow, json.RawMessage(`{"address":"12 Oak St, Austin, TX 78701","price":450000}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Execute(ctx, id); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runTailTest(t, "--url", wsURL, "--token", tok, "--since", welcome.Position, "--count", "7")
	if code != 0 {
		t.Fatalf("tail: exit %d: %s", code, errOut)
	}
	short := id[:8] + "…"
	want := []string{
		"ai:task:started  task " + short + "  [--------------------] 0%  create_escrow_from_address: Creating an escrow for 12 Oak St, Austin, TX 78701",
		"ai:task:progress  task " + short + "  [##------------------] 10%  Validating the address",
		"ai:task:progress  task " + short + "  [######--------------] 30%  Looking up 12 Oak St in the listings",
		"ai:task:progress  task " + short + "  [############--------] 60%  Drafting the escrow (no listing on file)",
		"ai:task:progress  task " + short + "  [#################---] 85%  Assigning the escrow to Ana Ruiz",
		"escrow:created   team 1  escrow 1  by user 1  req ai-task:" + id[:31] + "…  city=Austin", // and more columns
		`ai:task:completed  task ` + short + `  [####################] done  Escrow created  result={"escrowId":"1"}`,
	}
	got := lines(out)
	if len(got) == len(want) {
		got[5], _, _ = strings.Cut(got[5], " notes=")
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("tail printed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("escape sequences in output that is not a terminal: %q", out)
	}
}
