package changelog_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/rowcast/rowcast/relay/changelog"
	"github.com/rowcast/rowcast/relay/pgtest"
)

// TestTickerPausedGivesWay: the ticking relay stops answering (its
// connection goes through a proxy that is cut, as a paused process or a
// cut network leaves it: the TCP connection stays up); the server ends its
// idle session, the ticker lock goes with it, and the other relay's ticker
// takes over and ticks. Without the idle timeout the lock would stay with
// the silent ticker, and no relay would get another tick.
func TestTickerPausedGivesWay(t *testing.T) {
	d := newDB(t)
	u, err := url.Parse(d.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := pgtest.NewProxy(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	u.Host = proxy.Addr()

	holding := func() (func(bool), chan bool) {
		c := make(chan bool, 8)
		return func(v bool) { c <- v }, c
	}
	onA, a := holding()
	onB, b := holding()
	o := changelog.TickerOptions{PollMax: 20 * time.Millisecond, Retry: 100 * time.Millisecond, IdleTimeout: time.Second}
	oa, ob := o, o
	oa.OnHolding, ob.OnHolding = onA, onB
	ticked := make(chan struct{}, 1) // B recorded a tick
	ob.OnTick = func(int64) {
		select {
		case ticked <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	started := 0 // tickers running: a failure before B started waits for A alone
	defer func() {
		cancel()
		for range started {
			<-done
		}
	}()
	started++
	go func() { done <- changelog.NewTicker(u.String(), oa).Run(ctx) }()
	wait := func(c chan bool, want bool, what string) {
		t.Helper()
		select {
		case v := <-c:
			if v != want {
				t.Fatalf("%s: holding %v, want %v", what, v, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: not within 30s", what)
		}
	}
	wait(a, true, "A takes the ticker lock")
	started++
	go func() { done <- changelog.NewTicker(d.url, ob).Run(ctx) }()
	proxy.Cut()
	wait(b, true, "B takes over from the silent A")
	select { // a tick B recorded of what came before, if any
	case <-ticked:
	default:
	}
	before := d.queryInt("select max(tick) from rowcast.ticks")
	d.exec("insert into items (id, team_id) values (1, 7)")
	select {
	case <-ticked:
	case <-time.After(30 * time.Second):
		t.Fatal("no tick after B took over")
	}
	if after := d.queryInt("select max(tick) from rowcast.ticks"); after <= before {
		t.Fatalf("B ticked, yet the latest tick is %d (was %d)", after, before)
	}
	proxy.Restore()
	wait(a, false, "A learns it lost the lock")
}

// TestTickNotifiesOtherReadersOnly: a relay alone records its ticks without
// a notification (its ticker pokes its reader in process; a notification
// would wake every listening backend of the database for nothing), and its
// reader still gets every change; once another relay's reader listens, the
// ticks notify again, within the ticker's next look at the listeners.
func TestTickNotifiesOtherReadersOnly(t *testing.T) {
	d := newDB(t)
	rec := newRecorder()
	d.tailWith(rec, changelog.TailOptions{Listen: true})
	// A bystander: it listens for ticks without the listeners' lock.
	watch := connect(t, d.url)
	if _, err := watch.Exec(t.Context(), "listen "+changelog.TickChannel); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		d.exec("insert into items (id, team_id) values ($1, 7)", i)
		rec.waitChanges(t, i)
	}
	// Notifications arrive in commit order: a tick's would come first.
	d.exec("select pg_notify($1, 'marker')", changelog.TickChannel)
	n, err := watch.WaitForNotification(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.Payload != "marker" {
		t.Fatalf("tick %s notified while no other relay's reader listened", n.Payload)
	}

	other := changelog.NewTail(d.url, changelog.TailOptions{Listen: true, PollMin: time.Millisecond, PollMax: 20 * time.Millisecond})
	octx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- other.Run(octx, newRecorder()) }()
	defer func() { stop(); <-done }()
	select {
	case <-other.Ready():
	case err := <-done:
		t.Fatalf("other tail: %v", err)
	case <-ctx.Done():
		t.Fatal("other tail not ready after 30s")
	}
	heard := make(chan error, 1)
	go func() {
		n, err := watch.WaitForNotification(ctx)
		if err == nil && n.Payload == "marker" {
			err = fmt.Errorf("a second marker")
		}
		heard <- err
	}()
	writes := time.NewTicker(20 * time.Millisecond)
	defer writes.Stop()
	for i := 4; ; i++ {
		select {
		case err := <-heard:
			if err != nil {
				t.Fatalf("no tick notified while another relay's reader listened: %v", err)
			}
			return
		case <-writes.C:
			d.exec("insert into items (id, team_id) values ($1, 7)", i)
		}
	}
}

// TestTickerKeepsBell: with KeepBell the ticker leaves the writers'
// doorbell armed while changes flow, and ticks at each ring. Its polls are
// an hour apart, so only the doorbell can make it tick the second change;
// without KeepBell it disarms the doorbell after the first tick.
func TestTickerKeepsBell(t *testing.T) {
	d := newDB(t)
	ticked := make(chan int64, 16)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	defer func() { cancel(); <-done }()
	tk := changelog.NewTicker(d.url, changelog.TickerOptions{Listen: true, KeepBell: true,
		PollMin: time.Hour, PollMax: time.Hour, OnTick: func(n int64) { ticked <- n }})
	go func() { done <- tk.Run(ctx) }()
	waitTick := func(what string) {
		t.Helper()
		select {
		case <-ticked:
		case err := <-done:
			t.Fatalf("%s: ticker ended: %v", what, err)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no tick within 30s", what)
		}
	}
	// The first change is ticked by the ticker's first look or by the
	// doorbell, whichever comes after its commit.
	d.exec("insert into items (id, team_id) values (1, 7)")
	waitTick("first change")
	// A ticker without KeepBell disarms the doorbell right after it ticks.
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); {
		if v := d.queryInt("select coalesce(pg_sequence_last_value('rowcast.bell'), 1)"); v == 0 {
			t.Fatal("the doorbell was disarmed while changes flow")
		}
	}
	for i := 2; i <= 4; i++ {
		d.exec("insert into items (id, team_id) values ($1, 7)", i)
		waitTick(fmt.Sprintf("change %d", i))
	}
}

// TestTickerKeepBellLooksOnlyAtPollMax: with KeepBell the ticker does not
// also poll at PollMin while changes flow; it looks by itself only every
// PollMax (an hour here). A change committed with the bell silenced behind
// the ticker's back is not ticked within the window.
func TestTickerKeepBellLooksOnlyAtPollMax(t *testing.T) {
	d := newDB(t)
	ticked := make(chan int64, 16)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	defer func() { cancel(); <-done }()
	tk := changelog.NewTicker(d.url, changelog.TickerOptions{Listen: true, KeepBell: true,
		PollMax: time.Hour, OnTick: func(n int64) { ticked <- n }})
	go func() { done <- tk.Run(ctx) }()
	d.exec("insert into items (id, team_id) values (1, 7)")
	select {
	case <-ticked:
	case err := <-done:
		t.Fatalf("ticker ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("first change: no tick within 30s")
	}
	d.exec("select setval('rowcast.bell', 0)")
	d.exec("insert into items (id, team_id) values (2, 7)")
	select {
	case n := <-ticked:
		t.Fatalf("tick %d of a change that did not ring: the ticker polls while it keeps the bell", n)
	case <-time.After(300 * time.Millisecond):
	}
}
