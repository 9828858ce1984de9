package changelog_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rowcast/rowcast/relay/capture/changelog"
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
// doorbell armed however fast changes come, and ticks at each ring. Its
// polls are an hour apart, so only the doorbell can make it tick; without
// KeepBell it disarms the doorbell after a few ticks less than PollMin (an
// hour) apart.
func TestTickerKeepsBell(t *testing.T) {
	d := newDB(t)
	tk := startTicker(t, d, changelog.TickerOptions{Listen: true, KeepBell: true, PollMin: time.Hour, PollMax: time.Hour})
	for i := 1; i <= 8; i++ {
		d.exec("insert into items (id, team_id) values ($1, 7)", i)
		tk.wait(t, fmt.Sprintf("change %d", i))
	}
	bellStaysArmed(t, d, 300*time.Millisecond)
	d.exec("insert into items (id, team_id) values (9, 7)")
	tk.wait(t, "change 9")
}

// TestTickerRingWakesIt: Ring, from this process (the logical slot
// holder), wakes a ticker that waits for its next look (here an hour
// away), and it ticks at once.
func TestTickerRingWakesIt(t *testing.T) {
	d := newDB(t)
	tk := startTicker(t, d, changelog.TickerOptions{Listen: true, PollMin: time.Hour, PollMax: time.Hour})
	d.exec("insert into items (id, team_id) values (1, 7)")
	tk.wait(t, "the change before the first look, or its ring")
	d.exec("select setval('rowcast.bell', 0)") // the writers ring no more
	d.exec("insert into items (id, team_id) values (2, 7)")
	tk.Ring()
	tk.wait(t, "the change rung for")
}

// TestTickerRingsForSparseCommits: commits further apart than PollMin keep
// the doorbell armed (each is ticked at its ring, with no looks in
// between); commits closer together make the ticker silence it and poll.
func TestTickerRingsForSparseCommits(t *testing.T) {
	d := newDB(t)
	const pollMin = 200 * time.Millisecond
	tk := startTicker(t, d, changelog.TickerOptions{Listen: true, PollMin: pollMin, PollMax: time.Hour})
	for i := 1; i <= 6; i++ {
		if i > 1 {
			time.Sleep(pollMin + 50*time.Millisecond) // paces the commits; waits for nothing
		}
		d.exec("insert into items (id, team_id) values ($1, 7)", i)
		tk.wait(t, fmt.Sprintf("sparse change %d", i))
	}
	bellStaysArmed(t, d, 100*time.Millisecond)
	// Back to back: each change right after the tick before.
	i := 7
	for ; bellArmed(d); i++ {
		if i > 100 {
			t.Fatal("the doorbell still rings after 94 changes each right after the tick before")
		}
		d.exec("insert into items (id, team_id) values ($1, 7)", i)
		tk.wait(t, fmt.Sprintf("dense change %d", i))
	}
	// Sparse again: the ticker finds them by its looks, and rings for them
	// again after a few.
	for first := i; !bellArmed(d); i++ {
		if i > first+20 {
			t.Fatal("the doorbell is still disarmed after 20 changes each 250ms after the tick before")
		}
		time.Sleep(pollMin + 50*time.Millisecond) // paces the commits; waits for nothing
		d.exec("insert into items (id, team_id) values ($1, 7)", i)
		tk.wait(t, fmt.Sprintf("sparse change %d", i))
	}
}

// TestTickerDisarmsUnderFlood: a tick that takes longer than PollMin
// (here each tick sleeps 5 ms) does not keep the doorbell ringing under a
// flood of commits: the ticker counts the time it waited for the next
// ring, not the time between two ticks. When a flood stops, the ticker
// arms the bell again, after each flood.
func TestTickerDisarmsUnderFlood(t *testing.T) {
	d := newDB(t)
	d.exec(`create function slow_tick() returns trigger language plpgsql as $$ begin perform pg_sleep(0.005); return new; end $$`)
	d.exec("create trigger slow_tick before insert on rowcast.ticks for each row execute function slow_tick()")
	tk := startTicker(t, d, changelog.TickerOptions{Listen: true, PollMin: 2 * time.Millisecond, PollMax: time.Hour})
	// Sparse changes until the bell rings (the first look may have found
	// the first change before its ring, and silenced the bell).
	var id atomic.Int64
	for !bellArmed(d) || id.Load() == 0 {
		if id.Load() > 30 {
			t.Fatal("the doorbell is still silent after 30 sparse changes")
		}
		time.Sleep(20 * time.Millisecond) // paces the commits; waits for nothing
		d.exec("insert into items (id, team_id) values ($1, 7)", id.Add(1))
		tk.wait(t, fmt.Sprintf("sparse change %d", id.Load()))
	}
	go func() { // the test reads none of the flood's ticks
		for {
			select {
			case <-tk.ticked:
			case <-t.Context().Done():
				return
			}
		}
	}()
	// Twice: each flood disarms the bell, and once it stops the ticker
	// runs out of changes and arms the bell again (about 30ms after its
	// last tick), each time.
	for round := 1; round <= 2; round++ {
		ctx, stop := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					_, _ = d.pool.Exec(ctx, "insert into items (id, team_id) values ($1, 7)", id.Add(1))
				}
			}()
		}
		defer func() { stop(); wg.Wait() }() // when a wait below fails
		waitUntil(t, 30*time.Second, fmt.Sprintf("flood %d: the doorbell disarmed", round), func() bool { return !bellArmed(d) })
		stop()
		wg.Wait()
		waitUntil(t, 10*time.Second, fmt.Sprintf("flood %d: the doorbell armed again once it stopped", round), func() bool { return bellArmed(d) })
	}
}

// TestTickerNoticesSilentBell: a commit the doorbell did not announce,
// while the ticker believes it armed (here it was silenced behind its
// back), makes the ticker set it for certain and poll; commits that then
// come further apart than PollMin make it ring again.
func TestTickerNoticesSilentBell(t *testing.T) {
	d := newDB(t)
	const pollMin = 200 * time.Millisecond
	tk := startTicker(t, d, changelog.TickerOptions{Listen: true, PollMin: pollMin, PollMax: 500 * time.Millisecond})
	d.exec("insert into items (id, team_id) values (1, 7)")
	tk.wait(t, "first change")
	d.exec("select setval('rowcast.bell', 0)")
	for i := 2; !bellArmed(d); i++ {
		if i > 30 {
			t.Fatal("the doorbell is still silent after 29 changes the ticker found by looking")
		}
		time.Sleep(pollMin + 50*time.Millisecond) // paces the commits; waits for nothing
		d.exec("insert into items (id, team_id) values ($1, 7)", i)
		tk.wait(t, fmt.Sprintf("change %d", i))
	}
}

// bellArmed reports whether the writers' doorbell is armed.
func bellArmed(d *db) bool {
	return d.queryInt("select coalesce(pg_sequence_last_value('rowcast.bell'), 1)") != 0
}

// waitUntil polls cond every 10ms until it holds, and fails the test after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("not within %s: %s", d, what)
		}
	}
}

// testTicker is a Ticker run by a test, with its ticks.
type testTicker struct {
	*changelog.Ticker
	ticked chan int64
	done   chan error
}

// startTicker runs a Ticker of d with o until the test ends; o.OnTick, if
// set, is called before the tick is passed on to wait (the ticker waits
// while 16 ticks wait for it, until the test ends).
func startTicker(t *testing.T, d *db, o changelog.TickerOptions) *testTicker {
	t.Helper()
	return startTickerAt(t, d.url, o)
}

// startTickerAt is startTicker with the ticker connecting to url.
func startTickerAt(t *testing.T, url string, o changelog.TickerOptions) *testTicker {
	t.Helper()
	tk := &testTicker{ticked: make(chan int64, 16), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(t.Context())
	onTick := o.OnTick
	o.OnTick = func(n int64) {
		if onTick != nil {
			onTick(n)
		}
		select {
		case tk.ticked <- n:
		case <-ctx.Done():
		}
	}
	tk.Ticker = changelog.NewTicker(url, o)
	go func() { tk.done <- tk.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-tk.done })
	return tk
}

// wait waits for the ticker's next tick.
func (tk *testTicker) wait(t *testing.T, what string) {
	t.Helper()
	select {
	case <-tk.ticked:
	case err := <-tk.done:
		t.Fatalf("%s: ticker ended: %v", what, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no tick within 30s", what)
	}
}

// bellStaysArmed fails the test if the doorbell is disarmed within d.
func bellStaysArmed(t *testing.T, d *db, within time.Duration) {
	t.Helper()
	for end := time.Now().Add(within); time.Now().Before(end); {
		if d.queryInt("select coalesce(pg_sequence_last_value('rowcast.bell'), 1)") == 0 {
			t.Fatal("the doorbell was disarmed")
		}
	}
}

// TestTickerKeepBellLooksOnlyAtPollMax: with KeepBell the ticker does not
// also poll at PollMin while changes flow; it looks by itself only every
// PollMax (an hour here). A change committed with the bell silenced behind
// the ticker's back is not ticked within the window.
func TestTickerKeepBellLooksOnlyAtPollMax(t *testing.T) {
	d := newDB(t)
	tk := startTicker(t, d, changelog.TickerOptions{Listen: true, KeepBell: true, PollMax: time.Hour})
	d.exec("insert into items (id, team_id) values (1, 7)")
	tk.wait(t, "first change")
	// The ticker may have found the first change by its first look, before
	// the ring, and then set the bell again. The second is ticked at its
	// ring, after the ticker did all it does for the first.
	d.exec("insert into items (id, team_id) values (2, 7)")
	tk.wait(t, "second change")
	d.exec("select setval('rowcast.bell', 0)")
	d.exec("insert into items (id, team_id) values (3, 7)")
	select {
	case n := <-tk.ticked:
		t.Fatalf("tick %d of a change that did not ring: the ticker polls while it keeps the bell", n)
	case <-time.After(300 * time.Millisecond):
	}
}

// The ticker's connections are named apart from the reader's ("rowcast
// ticker", and "rowcast doorbell" for the one that listens to the
// writers' doorbell), so that bench's CPU split shows each listening
// backend's cost.
func TestTickerNamesItsConnections(t *testing.T) {
	d := newDB(t)
	startTicker(t, d, changelog.TickerOptions{Listen: true})
	var names []string
	waitUntil(t, 10*time.Second, "the ticker's two connections", func() bool {
		names = nil
		rows, err := d.pool.Query(t.Context(), `select application_name from pg_stat_activity
where datname = current_database() and application_name like 'rowcast %' order by 1`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		return len(names) >= 2
	})
	if !slices.Equal(names, []string{"rowcast doorbell", "rowcast ticker"}) {
		t.Errorf("the ticker's connections are named %q, want rowcast doorbell and rowcast ticker", names)
	}
}

// While the ticker polls, its empty looks keep the rhythm (under load
// they are gaps between commits) until it arms the doorbell, after four
// doubling intervals (30ms at the defaults); the arming step sets the
// interval to 16 × PollMin, and from then on the looks back off, doubling
// up to PollMax. Every look the old schedule made (doubling from the
// first empty look) is among the new ones, so no commit waits longer; with
// a PollMin above PollMax / 8 the looks are the old ones. The bell is
// armed once.
func TestTickerKeepsItsRhythmUntilItArmsTheBell(t *testing.T) {
	const ms = time.Millisecond
	for _, c := range []struct {
		pollMin, pollMax, armAfter time.Duration
		kept                       int // empty looks that keep the interval; 0: the old schedule
	}{
		{2 * ms, 250 * ms, 30 * ms, 14},
		{20 * ms, 250 * ms, 300 * ms, 14},
		{100 * ms, 250 * ms, 800 * ms, 0},
		{200 * ms, 250 * ms, 950 * ms, 0},
		{250 * ms, 250 * ms, 1000 * ms, 0},
	} {
		armAfter := changelog.ArmingDelay(c.pollMin, c.pollMax)
		if armAfter != c.armAfter {
			t.Errorf("ArmingDelay(%v, %v) = %v, want %v", c.pollMin, c.pollMax, armAfter, c.armAfter)
		}
		horizon := armAfter + 4*c.pollMax
		interval, since, armed, arms, kept := c.pollMin, c.pollMin, false, 0, 0
		var looks []time.Duration
		for since <= horizon {
			looks = append(looks, since)
			next, arm := changelog.EmptyLook(interval, since, armAfter, armed, false, c.pollMin, c.pollMax)
			if arm {
				arms++
				if since != armAfter {
					t.Errorf("poll %v: armed %v after the last tick, want %v", c.pollMin, since, armAfter)
				}
				armed = true
			} else if !armed && next == interval {
				kept++
			}
			interval = next
			since += interval
		}
		var old []time.Duration // doubling from the first empty look
		for at, step := c.pollMin, c.pollMin; at <= horizon; at += step {
			old = append(old, at)
			step = min(step*2, c.pollMax)
		}
		for _, at := range old {
			if !slices.Contains(looks, at) {
				t.Errorf("poll %v: no look at %v, where the old schedule looked: %v against %v", c.pollMin, at, looks, old)
			}
		}
		if c.kept == 0 && !slices.Equal(looks, old) {
			t.Errorf("poll %v: looks %v, want the old schedule's %v", c.pollMin, looks, old)
		}
		if arms != 1 || c.kept > 0 && kept != c.kept {
			t.Errorf("poll %v: armed %d times, %d looks kept the interval; want once, %d", c.pollMin, arms, kept, c.kept)
		}
	}
}

// While the doorbell rings, every empty look doubles the interval: commits
// at an even rate, each rung and ticked at once, cost a few empty looks
// while the interval grows past the gap between them, not one each.
func TestTickerRingingLooksBackOff(t *testing.T) {
	const ms = time.Millisecond
	armAfter := changelog.ArmingDelay(2*ms, 250*ms)
	for _, gap := range []time.Duration{3 * ms, 5 * ms, 7 * ms, 10 * ms, 20 * ms, 40 * ms, 100 * ms} {
		interval, empty := 2*ms, 0
		for range 1000 { // a commit rings: a tick, and the timer runs from it
			armed := false
			for at := interval; at < gap; at += interval {
				empty++
				var arm bool
				interval, arm = changelog.EmptyLook(interval, at, armAfter, armed, true, 2*ms, 250*ms)
				armed = armed || arm
			}
		}
		if empty > 8 {
			t.Errorf("commits %v apart, the bell ringing: %d empty looks over 1,000 commits, want a few", gap, empty)
		}
	}
}

// blackHole is a server that accepts connections and never answers, as a
// pooler queueing them or a hung proxy does; accepted counts them.
func blackHole(t *testing.T) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), accepted
}

// TestTickerConnectTimesOut: a ticker whose connect hangs gives up after
// ConnectTimeout and tries again, rather than wait for as long as the
// connect hangs (a connect holding the ticker lock would stop every
// relay's ticks); so does a LISTEN connection's connect.
func TestTickerConnectTimesOut(t *testing.T) {
	addr, accepted := blackHole(t)
	u := "postgres://rowcast@" + addr + "/rowcast?sslmode=disable"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	tk := changelog.NewTicker(u, changelog.TickerOptions{ConnectTimeout: 100 * time.Millisecond})
	go func() { done <- tk.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitUntil(t, 10*time.Second, "a second connect", func() bool { return accepted.Load() >= 2 })

	start := time.Now()
	lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer lcancel()
	if err := changelog.ListenOnce(lctx, u, 100*time.Millisecond, false); err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("listen against a server that never answers: %v after %v, want an error within its timeout", err, time.Since(start))
	}
}

// TestListenSetupTimesOut: a LISTEN connection whose setup hangs after it
// connected (here the listeners' lock, which nothing but a test takes
// exclusively; in the field a server or a pooler that stopped answering)
// gives up after its timeout, rather than hold up its ticker or reader for
// as long as the setup hangs.
func TestListenSetupTimesOut(t *testing.T) {
	d := newDB(t)
	d.exec("select pg_advisory_lock(hashtext('rowcast.listeners')::bigint)")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := changelog.ListenOnce(ctx, d.url, 200*time.Millisecond, true); err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("listen whose setup waits: %v after %v, want an error within its timeout", err, time.Since(start))
	}
}
