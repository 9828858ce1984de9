package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rowcast/rowcast/relay/client"
)

// Defaults and limits of `rowcast tail`.
const (
	tailDefaultURL = "ws://127.0.0.1:8080/ws"
	tailTokenEnv   = "ROWCAST_TOKEN"

	// tailMinBackoff and tailMaxBackoff bound the reconnect delay: attempt n
	// waits a random time in [d/2, d] with d = min(tailMinBackoff·2ⁿ,
	// tailMaxBackoff).
	tailMinBackoff = 500 * time.Millisecond
	tailMaxBackoff = 30 * time.Second

	// tailHandshakeTimeout bounds the HTTP upgrade.
	tailHandshakeTimeout = 10 * time.Second
	// tailWelcomeTimeout bounds the wait for the welcome frame; after it the
	// read deadline is two heartbeat periods plus tailHeartbeatSlack.
	tailWelcomeTimeout = 30 * time.Second
	tailHeartbeatSlack = 5 * time.Second
	// tailWriteWait bounds control and subscribe writes.
	tailWriteWait = 5 * time.Second
	// tailReadLimit caps one frame from the relay (a created row can be big).
	tailReadLimit = 16 << 20
)

// Limits of the readable output.
const (
	tailMaxLineRunes    = 200 // a whole stdout line
	tailMaxValueRunes   = 40  // one column value
	tailMaxResultRunes  = 60  // an AI task's result
	tailMaxMessageRunes = 120 // an AI task's message or error, an error frame's text
	tailMaxRowFields    = 5   // columns shown for a created row
	tailBarCols         = 20
	tailNoTime          = "--:--:--.---"
	tailMaxLiveTasks    = 8 // live lines at the bottom of a terminal; more go to the log
)

// tailConfig is a parsed `rowcast tail` command line.
type tailConfig struct {
	url        *url.URL // ws:// or wss://, path never empty, no since parameter of ours
	token      string   // sent as Authorization: Bearer; never printed
	entities   []string // when set, subscribe to these entity types after each welcome
	since      string   // position to resume from on the first connection
	raw        bool     // --json: print frames as received
	reconnect  bool     // false with --no-reconnect
	count      int      // exit after this many events; 0 means never
	minBackoff time.Duration
	maxBackoff time.Duration
}

// runTail runs `rowcast tail [flags]`: it subscribes to a relay's plain
// WebSocket endpoint and prints each frame on one line, events on stdout and
// everything else (welcome, resumed, resync, error frames, reconnects) on
// stderr; with --json every frame goes to stdout exactly as received.
//
// When stdout is a terminal (and TERM is not "dumb"), each running AI task
// gets one line at the bottom of the screen that is rewritten in place as
// its progress events arrive; its started and its completed or failed
// events are printed as lines like any other. Otherwise every event is a
// line of its own.
//
// It returns the process exit code: 0 when ctx ends (Ctrl-C) or --count
// events were printed, 1 on failure (a refused handshake, close codes 4400,
// 4401 and 4429, or any lost connection with --no-reconnect), 2 on usage
// errors. The token is never written to stdout or stderr.
func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseTailArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	t := &tailer{
		cfg:    cfg,
		stdout: stdout,
		stderr: stderr,
		style:  tailStyle{loc: time.Local, color: tailColorEnabled(stdout)},
	}
	if !cfg.raw && tailIsTerminal(stdout) {
		t.live = &tailBoard{}
	}
	if err := t.run(ctx); err != nil {
		fmt.Fprintf(stderr, "rowcast tail: %v\n", err)
		return 1
	}
	return 0
}

// parseTailArgs parses the flags of `rowcast tail`. Parse errors and usage
// go to stderr; it returns flag.ErrHelp for -h.
func parseTailArgs(args []string, stderr io.Writer) (tailConfig, error) {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: rowcast tail [flags]

Subscribes to a relay's WebSocket endpoint and prints each event on one line.
Events go to stdout; connection notices and error frames go to stderr.

`)
		fs.PrintDefaults()
	}
	rawURL := fs.String("url", tailDefaultURL, "relay `URL` (ws, wss, http or https; an empty path means /ws)")
	token := fs.String("token", "", "`JWT` sent as \"Authorization: Bearer\" (default $"+tailTokenEnv+")")
	entities := fs.String("entities", "", "comma-separated entity `types` to subscribe to, e.g. escrow,lead (AI task events always arrive)")
	since := fs.String("since", "", "resume after this `position`")
	raw := fs.Bool("json", false, "print every frame exactly as received, one per line")
	noReconnect := fs.Bool("no-reconnect", false, "exit 1 when the connection drops instead of resuming")
	count := fs.Int("count", 0, "exit 0 after `N` events (0: never)")

	if err := fs.Parse(args); err != nil {
		return tailConfig{}, err
	}
	usageErr := func(err error) (tailConfig, error) {
		fmt.Fprintf(stderr, "rowcast tail: %v\nrun 'rowcast tail -h' for usage\n", err)
		return tailConfig{}, err
	}
	if fs.NArg() > 0 {
		return usageErr(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if *count < 0 {
		return usageErr(fmt.Errorf("--count must be 0 or more, got %d", *count))
	}
	u, err := normalizeTailURL(*rawURL)
	if err != nil {
		return usageErr(err)
	}
	cfg := tailConfig{
		url:        u,
		token:      *token,
		since:      *since,
		raw:        *raw,
		reconnect:  !*noReconnect,
		count:      *count,
		minBackoff: tailMinBackoff,
		maxBackoff: tailMaxBackoff,
	}
	if cfg.token == "" {
		cfg.token = os.Getenv(tailTokenEnv)
	}
	for _, e := range strings.Split(*entities, ",") {
		if e = strings.TrimSpace(e); e != "" {
			cfg.entities = append(cfg.entities, e)
		}
	}
	return cfg, nil
}

// normalizeTailURL turns an http, https, ws or wss URL into the WebSocket URL
// to dial: http becomes ws, https becomes wss, and an empty (or "/") path
// becomes /ws. Errors never quote the URL, which may carry an access_token.
func normalizeTailURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("url: %w", err)
	}
	switch strings.ToLower(u.Scheme) {
	case "ws", "http":
		u.Scheme = "ws"
	case "wss", "https":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("url: scheme %q is not ws, wss, http or https", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("url: no host")
	}
	if u.Path == "" || u.Path == "/" {
		u.Path, u.RawPath = "/ws", ""
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// tailer is one run of `rowcast tail`. Only the goroutine running run writes
// to stdout and stderr.
type tailer struct {
	cfg    tailConfig
	stdout io.Writer
	stderr io.Writer
	style  tailStyle
	live   *tailBoard // nil unless stdout is a terminal
}

// run connects, prints, and reconnects until ctx ends (nil), --count events
// were printed (nil), or a failure that reconnecting cannot cure (an error).
// The protocol (resume by position, backoff, heartbeat deadlines, close
// codes) is package client's; tail prints.
func (t *tailer) run(ctx context.Context) error {
	events := 0
	s := &client.Session{
		Options: client.Options{URL: t.cfg.url.String(), Token: t.cfg.token, Since: t.cfg.since,
			HandshakeTimeout: tailHandshakeTimeout, WelcomeTimeout: tailWelcomeTimeout, ReadLimit: tailReadLimit},
		Entities:   t.cfg.entities,
		MinBackoff: t.cfg.minBackoff, MaxBackoff: t.cfg.maxBackoff,
		NoReconnect: !t.cfg.reconnect,
	}
	var writeErr error
	s.OnDrop = func(err error, wait time.Duration) {
		if e := t.emit(true, fmt.Sprintf("%v; reconnecting in %v", err, wait.Round(time.Millisecond))); e != nil && writeErr == nil {
			writeErr = e
		}
	}
	err := s.Run(ctx, func(f client.Frame) error {
		if writeErr != nil {
			return writeErr
		}
		var tf tailFrame
		parsed := tailDecode(f.Raw, &tf)
		wanted := !parsed || tf.Type != "event" || t.wants(tf)
		if !wanted {
			return nil
		}
		if err := t.print(f.Raw); err != nil {
			return err
		}
		if tf.Type == "event" {
			if events++; t.cfg.count > 0 && events >= t.cfg.count {
				return client.ErrStop
			}
		}
		return nil
	})
	if err == nil {
		err = writeErr
	}
	return err
}

// wants reports whether an event frame passes the --entities filter. The
// relay filters after subscribe, but events replayed before it arrive
// unfiltered. Events without an entityType (AI tasks) always pass.
func (t *tailer) wants(f tailFrame) bool {
	if len(t.cfg.entities) == 0 {
		return true
	}
	var d struct {
		EntityType string `json:"entityType"`
	}
	if json.Unmarshal(f.Data, &d) != nil || d.EntityType == "" {
		return true
	}
	for _, e := range t.cfg.entities {
		if e == d.EntityType {
			return true
		}
	}
	return false
}

// print writes one frame: raw to stdout with --json, else formatted. With a
// live board, an AI task's progress only rewrites the task's live line, its
// started event also opens that line, and its end closes it.
func (t *tailer) print(msg []byte) error {
	if t.cfg.raw {
		if _, err := fmt.Fprintf(t.stdout, "%s\n", msg); err != nil {
			return fmt.Errorf("write stdout: %w", err)
		}
		return nil
	}
	line, toStderr := formatEvent(msg, t.style)
	if t.live == nil || toStderr {
		return t.emit(toStderr, line)
	}
	var f tailFrame
	var d struct {
		TaskID tailID `json:"taskId"`
	}
	if !tailDecode(msg, &f) || !strings.HasPrefix(f.Event, "ai:task:") || !tailDecode(f.Data, &d) || d.TaskID == "" {
		return t.emit(false, line)
	}
	id := string(d.TaskID)
	var lines []string // for the log, above the board
	switch f.Event {
	case "ai:task:completed", "ai:task:failed":
		t.live.remove(id)
		lines = append(lines, line)
	default: // started, progress, and any later kind of task event
		if evicted := t.live.set(id, line); evicted != "" {
			lines = append(lines, evicted)
		}
		if f.Event == "ai:task:started" {
			lines = append(lines, line)
		}
	}
	if err := t.live.clear(t.stdout); err != nil {
		return err
	}
	for _, l := range lines {
		if _, err := fmt.Fprintln(t.stdout, l); err != nil {
			return fmt.Errorf("write stdout: %w", err)
		}
	}
	return t.live.draw(t.stdout)
}

// emit writes one line to stdout, or to stderr when toStderr is set, above
// the live board if there is one. Only a failure to write stdout is an
// error.
func (t *tailer) emit(toStderr bool, line string) error {
	if t.live != nil {
		if err := t.live.clear(t.stdout); err != nil {
			return err
		}
	}
	if toStderr {
		fmt.Fprintln(t.stderr, line)
	} else if _, err := fmt.Fprintln(t.stdout, line); err != nil {
		return fmt.Errorf("write stdout: %w", err)
	}
	if t.live != nil {
		return t.live.draw(t.stdout)
	}
	return nil
}

// tailBoard is the live part of a terminal: one line per running AI task,
// drawn below the lines printed so far and redrawn in place. Autowrap is
// off while it draws, so each of its lines takes exactly one row whatever
// the terminal's width, and clear can move back over them.
type tailBoard struct {
	ids   []string          // running tasks, in the order they appeared
	lines map[string]string // task id → its line
	drawn int               // rows the board takes on the screen now; the cursor is below them
}

// set makes line the task's live line, and returns the last line of the
// task that had to leave the board to make room (the one that appeared
// first), or "".
func (b *tailBoard) set(id, line string) (evicted string) {
	if b.lines == nil {
		b.lines = map[string]string{}
	}
	if _, ok := b.lines[id]; !ok {
		b.ids = append(b.ids, id)
		if len(b.ids) > tailMaxLiveTasks {
			evicted = b.lines[b.ids[0]]
			delete(b.lines, b.ids[0])
			b.ids = b.ids[1:]
		}
	}
	b.lines[id] = line
	return evicted
}

// remove takes the task's line off the board (at the next draw).
func (b *tailBoard) remove(id string) {
	if _, ok := b.lines[id]; !ok {
		return
	}
	delete(b.lines, id)
	for i, v := range b.ids {
		if v == id {
			b.ids = append(b.ids[:i], b.ids[i+1:]...)
			break
		}
	}
}

// clear erases the board from the screen, leaving the cursor where its
// first line was.
func (b *tailBoard) clear(w io.Writer) error {
	if b.drawn == 0 {
		return nil
	}
	if _, err := fmt.Fprintf(w, "\x1b[%dA\r\x1b[J", b.drawn); err != nil {
		return fmt.Errorf("write stdout: %w", err)
	}
	b.drawn = 0
	return nil
}

// draw writes the board at the cursor, which must be at the start of a
// line, and leaves the cursor below it.
func (b *tailBoard) draw(w io.Writer) error {
	if len(b.ids) == 0 {
		return nil
	}
	var s strings.Builder
	s.WriteString("\x1b[?7l")
	for _, id := range b.ids {
		s.WriteString(b.lines[id])
		s.WriteByte('\n')
	}
	s.WriteString("\x1b[?7h")
	if _, err := io.WriteString(w, s.String()); err != nil {
		return fmt.Errorf("write stdout: %w", err)
	}
	b.drawn = len(b.ids)
	return nil
}

// tailColorEnabled reports whether lines written to w may carry ANSI colour: w is
// a terminal, NO_COLOR is unset and TERM is not "dumb".
func tailColorEnabled(w io.Writer) bool {
	if _, set := os.LookupEnv("NO_COLOR"); set {
		return false
	}
	return tailIsTerminal(w)
}

// tailIsTerminal reports whether w is a terminal that understands cursor
// movement: a character device, with TERM not "dumb".
func tailIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// ---- formatting ----

// tailStyle says how formatEvent renders.
type tailStyle struct {
	loc   *time.Location // zone of the time column; nil means UTC
	color bool           // ANSI colour on stdout lines
}

// tailID is an id the protocol sends as a string; a number is accepted
// too and kept as its JSON text, null as "".
type tailID string

// UnmarshalJSON implements json.Unmarshaler.
func (s *tailID) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("id: %w", err)
		}
		*s = tailID(v)
		return nil
	}
	if string(b) == "null" {
		*s = ""
		return nil
	}
	*s = tailID(b)
	return nil
}

// frame is any frame the relay sends (docs/protocol.md sections 2, 3, 5, 6).
type tailFrame struct {
	Type     string          `json:"type"`
	Event    string          `json:"event"`
	Position string          `json:"position"`
	Data     json.RawMessage `json:"data"`

	Protocol    int      `json:"protocol"`
	SessionID   tailID   `json:"sessionId"`
	UserID      tailID   `json:"userId"`
	TeamIDs     []tailID `json:"teamIds"`
	HeartbeatMs int64    `json:"heartbeatMs"`
	ExpiresAt   tailID   `json:"expiresAt"`

	Replayed   int             `json:"replayed"`
	Reason     string          `json:"reason"`
	EntityType string          `json:"entityType"`
	Code       string          `json:"code"`
	Message    string          `json:"message"`
	TeamID     tailID          `json:"teamId"`
	Entities   []tailID        `json:"entities"`
	ID         json.RawMessage `json:"id"`
}

// tailEventData is the data object of any event: a row change, an AI task, or
// a legacy data:update.
type tailEventData struct {
	EntityType  string          `json:"entityType"`
	EntityID    tailID          `json:"entityId"`
	Action      string          `json:"action"`
	TeamID      tailID          `json:"teamId"`
	UserID      tailID          `json:"userId"`
	RequestID   tailID          `json:"requestId"`
	Changes     json.RawMessage `json:"changes"`
	CommittedAt string          `json:"committedAt"`
	Data        json.RawMessage `json:"data"`

	TaskID    tailID          `json:"taskId"`
	TaskType  json.RawMessage `json:"taskType"`
	Progress  *float64        `json:"progress"`
	Message   json.RawMessage `json:"message"`
	Result    json.RawMessage `json:"result"`
	Error     json.RawMessage `json:"error"`
	Timestamp string          `json:"timestamp"`
}

// tailDecode unmarshals a JSON object into v; a member of an unexpected
// type leaves its field zero instead of failing the whole frame.
func tailDecode(raw []byte, v any) bool {
	err := json.Unmarshal(raw, v)
	var te *json.UnmarshalTypeError
	return err == nil || errors.As(err, &te)
}

// formatEvent renders one relay frame as one line without a trailing
// newline. Events go to stdout (toStderr false) as
//
//	HH:MM:SS.mmm <event>  team T  <entity> ID  by user U  col=value …
//
// with the time being data.committedAt (data.timestamp for AI tasks) in
// st.loc, values cut to tailMaxValueRunes and the line to tailMaxLineRunes runes.
// Every other frame (welcome, resumed, resync, error, …) and unreadable input
// is a plain notice for stderr. It never fails and never prints control
// characters from the frame.
func formatEvent(raw []byte, st tailStyle) (line string, toStderr bool) {
	var f tailFrame
	if !tailDecode(raw, &f) || f.Type == "" {
		return "unreadable frame: " + tailTruncate(tailOneLine(string(raw)), tailMaxMessageRunes), true
	}
	switch f.Type {
	case "event":
		return formatTailEvent(f, st), false
	case "welcome":
		teams := make([]string, 0, len(f.TeamIDs))
		for _, id := range f.TeamIDs {
			teams = append(teams, tailOneLine(string(id)))
		}
		list := strings.Join(teams, ",")
		if list == "" {
			list = "none"
		}
		s := fmt.Sprintf("connected as user %s, teams %s, session %s",
			tailOneLine(string(f.UserID)), list, tailOneLine(string(f.SessionID)))
		if f.Protocol != 0 && f.Protocol != 1 {
			s += fmt.Sprintf(" (relay speaks protocol %d, tail speaks 1)", f.Protocol)
		}
		return s, true
	case "resumed":
		unit := "events"
		if f.Replayed == 1 {
			unit = "event"
		}
		return fmt.Sprintf("resumed: replayed %d %s", f.Replayed, unit), true
	case "resync":
		reason := tailOneLine(f.Reason)
		if f.EntityType != "" {
			reason += " of " + tailOneLine(f.EntityType)
		}
		return fmt.Sprintf("resync (%s): refetch over the REST API", reason), true
	case "error":
		s := "error"
		if f.Code != "" {
			s += " " + tailOneLine(f.Code)
		}
		if f.TeamID != "" {
			s += " team " + tailOneLine(string(f.TeamID))
		}
		if f.Message != "" {
			s += ": " + tailTruncate(tailOneLine(f.Message), tailMaxMessageRunes)
		}
		return s, true
	case "subscribed":
		names := make([]string, 0, len(f.Entities))
		for _, e := range f.Entities {
			names = append(names, tailOneLine(string(e)))
		}
		return "subscribed to " + strings.Join(names, ", "), true
	case "pong":
		return "pong " + tailTruncate(tailOneLine(string(f.ID)), tailMaxValueRunes), true
	case "auth_ok":
		return "token accepted, expires " + tailOneLine(string(f.ExpiresAt)), true
	}
	return "frame: " + tailTruncate(tailOneLine(string(raw)), tailMaxMessageRunes), true
}

// formatTailEvent renders an event frame for stdout.
func formatTailEvent(f tailFrame, st tailStyle) string {
	var d tailEventData
	_ = json.Unmarshal(f.Data, &d) // keep whatever fields decoded
	name := tailOneLine(f.Event)
	var parts []string
	stamp := d.CommittedAt
	if strings.HasPrefix(name, "ai:task:") {
		stamp = d.Timestamp
		parts = tailTaskParts(name, d)
	} else {
		parts = tailEntityParts(name, f.Data, d)
	}
	ts := tailStamp(stamp, st.loc)
	pad := max(17-utf8.RuneCountInString(name), 2)
	head := ts + " " + name + strings.Repeat(" ", pad)
	rest := tailTruncate(strings.Join(parts, "  "), tailMaxLineRunes-utf8.RuneCountInString(head))
	if !st.color {
		return strings.TrimRight(head+rest, " ")
	}
	return strings.TrimRight(tailPaint("2", ts)+" "+tailPaint(tailEventColor(name), name)+strings.Repeat(" ", pad)+rest, " ")
}

// tailEntityParts renders a row change (or a legacy data:update).
func tailEntityParts(name string, rawData json.RawMessage, d tailEventData) []string {
	var parts []string
	if d.TeamID != "" {
		parts = append(parts, "team "+tailOneLine(string(d.TeamID)))
	}
	if d.EntityType != "" || d.EntityID != "" {
		parts = append(parts, strings.TrimSpace(tailOneLine(d.EntityType)+" "+tailOneLine(string(d.EntityID))))
	}
	if d.UserID != "" {
		parts = append(parts, "by user "+tailOneLine(string(d.UserID)))
	}
	if d.RequestID != "" {
		parts = append(parts, "req "+tailTruncate(tailOneLine(string(d.RequestID)), tailMaxValueRunes))
	}
	if d.Action != "" && name != d.EntityType+":"+d.Action {
		parts = append(parts, tailOneLine(d.Action))
	}
	if d.EntityType == "" && d.EntityID == "" {
		if len(rawData) > 0 {
			parts = append(parts, "data="+tailValue(rawData, tailMaxMessageRunes))
		}
		return parts
	}
	if fs, ok := tailObjectFields(d.Changes); ok {
		return tailAppendFields(parts, fs, len(fs), nil)
	}
	var byKey map[string]json.RawMessage
	_ = json.Unmarshal(rawData, &byKey)
	row, ok := tailObjectFields(byKey[d.EntityType])
	if !ok {
		row, ok = tailObjectFields(d.Data) // legacy data:update
	}
	if ok {
		skip := func(key string, v json.RawMessage) bool {
			switch key {
			case "id", "team_id", "teamId", "created_at", "updated_at", "createdAt", "updatedAt",
				d.EntityType + "_id", d.EntityType + "Id":
				return true
			}
			s := string(v)
			return s == "null" || s == `""`
		}
		return tailAppendFields(parts, row, tailMaxRowFields, skip)
	}
	return parts
}

// tailAppendFields appends "key=value key=value …" as one part: at most limit
// fields not skipped, then "…" when more remain.
func tailAppendFields(parts []string, fs []tailField, limit int, skip func(string, json.RawMessage) bool) []string {
	var b strings.Builder
	n := 0
	for _, f := range fs {
		if skip != nil && skip(f.key, f.value) {
			continue
		}
		if n == limit {
			b.WriteString(" …")
			break
		}
		if n > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(tailOneLine(f.key))
		b.WriteByte('=')
		b.WriteString(tailValue(f.value, tailMaxValueRunes))
		n++
	}
	if b.Len() == 0 {
		return parts
	}
	return append(parts, b.String())
}

// tailTaskParts renders an AI task event.
func tailTaskParts(name string, d tailEventData) []string {
	parts := []string{"task " + tailShortID(tailOneLine(string(d.TaskID)))}
	msg := tailTruncate(tailText(d.Message), tailMaxMessageRunes)
	progress := 0.0
	if d.Progress != nil {
		progress = *d.Progress
	}
	switch name {
	case "ai:task:started":
		parts = append(parts, tailProgressBar(progress))
		label := tailText(d.TaskType)
		if label != "" && msg != "" {
			label += ": "
		}
		parts = append(parts, label+msg)
	case "ai:task:completed":
		parts = append(parts, tailProgressBar(100)[:tailBarCols+2]+" done", msg)
		if r := string(d.Result); r != "" && r != "null" {
			parts = append(parts, "result="+tailValue(d.Result, tailMaxResultRunes))
		}
	case "ai:task:failed":
		e := tailText(d.Error)
		if e == "" {
			e = "unknown error"
		}
		parts = append(parts, "failed: "+tailTruncate(e, tailMaxMessageRunes))
	default: // ai:task:progress and any later task event
		if d.Progress != nil || name == "ai:task:progress" {
			parts = append(parts, tailProgressBar(progress))
		}
		parts = append(parts, msg)
	}
	out := parts[:0]
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// tailProgressBar renders "[#########-----------] 45%" for a percentage,
// clamped to 0–100.
func tailProgressBar(p float64) string {
	p = min(max(p, 0), 100)
	filled := int(p * tailBarCols / 100)
	return "[" + strings.Repeat("#", filled) + strings.Repeat("-", tailBarCols-filled) + "] " +
		strconv.Itoa(int(p)) + "%"
}

// tailShortID cuts a long id (a UUID) to its first 8 runes and "…".
func tailShortID(id string) string {
	if utf8.RuneCountInString(id) <= 9 {
		return id
	}
	return string([]rune(id)[:8]) + "…"
}

// tailStamp renders an RFC 3339 time as HH:MM:SS.mmm in loc.
func tailStamp(s string, loc *time.Location) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return tailNoTime
	}
	if loc == nil {
		loc = time.UTC
	}
	return t.In(loc).Format("15:04:05.000")
}

// field is one member of a JSON object, in document order.
type tailField struct {
	key   string
	value json.RawMessage
}

// tailObjectFields returns the members of a JSON object in their order, values
// as raw JSON (so numeric keeps its scale). ok is false for anything else.
func tailObjectFields(raw json.RawMessage) (fs []tailField, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fs, len(fs) > 0
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fs, len(fs) > 0
		}
		fs = append(fs, tailField{key: key, value: v})
	}
	return fs, true
}

// tailValue renders a JSON value for a key=value pair: strings bare when
// they are one plain word, else Go-quoted; numbers, booleans and null as
// sent; objects and arrays as compact JSON. The value is cut to limit runes.
func tailValue(raw json.RawMessage, limit int) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			s = tailTruncate(s, limit)
			if tailPlainWord(s) {
				return s
			}
			return strconv.Quote(s)
		}
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		raw = buf.Bytes()
	}
	return tailTruncate(tailOneLine(string(raw)), limit)
}

// tailText renders a JSON value as free text: a string as its content, null
// or nothing as "", anything else as compact JSON.
func tailText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return tailOneLine(s)
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		raw = buf.Bytes()
	}
	return tailOneLine(string(raw))
}

// tailPlainWord reports whether s can be printed unquoted in key=value.
func tailPlainWord(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' || r == '=' || r == '\\' {
			return false
		}
	}
	return true
}

// tailOneLine replaces line breaks, tabs and other control characters (so also
// terminal escapes) by spaces.
func tailOneLine(s string) string {
	if strings.IndexFunc(s, tailUnsafeRune) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if tailUnsafeRune(r) {
			return ' '
		}
		return r
	}, s)
}

func tailUnsafeRune(r rune) bool {
	return r == utf8.RuneError || unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

// tailTruncate cuts s to at most n runes, ending it with "…" when cut.
func tailTruncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// tailEventColor picks an ANSI SGR colour for an event name by its action.
func tailEventColor(name string) string {
	switch {
	case strings.HasSuffix(name, ":deleted"), strings.HasSuffix(name, ":failed"):
		return "31" // red
	case strings.HasSuffix(name, ":created"), strings.HasSuffix(name, ":started"),
		strings.HasSuffix(name, ":completed"):
		return "32" // green
	case strings.HasSuffix(name, ":updated"), strings.HasSuffix(name, ":progress"):
		return "33" // yellow
	}
	return "36" // cyan
}

// tailPaint wraps s in an ANSI SGR sequence.
func tailPaint(sgr, s string) string {
	return "\x1b[" + sgr + "m" + s + "\x1b[0m"
}
