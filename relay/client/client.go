// Package client is a Go client of rowcast's plain WebSocket protocol
// (docs/protocol.md): one connection (Dial, then Next frame by frame), or a
// session that reconnects and resumes from its last position (Run). It is
// what `rowcast tail`, `rowcast bench` and the tests speak to a relay with;
// it renders nothing.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// Defaults of Options.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultWelcomeTimeout   = 30 * time.Second
	DefaultReadLimit        = 16 << 20 // one frame from the relay; a created row can be big
	// heartbeatSlack is added to two heartbeat periods for the read deadline.
	heartbeatSlack = 5 * time.Second
	writeWait      = 5 * time.Second
)

// Options says how to connect.
type Options struct {
	// URL is the relay's WebSocket endpoint (ws://host:port/ws).
	URL string
	// Token is sent as "Authorization: Bearer"; empty sends none.
	Token string
	// Since, when set, resumes after that position (?since=).
	Since string
	// Header holds extra request headers (Origin, say); may be nil.
	Header http.Header
	// HandshakeTimeout bounds the upgrade (default DefaultHandshakeTimeout);
	// WelcomeTimeout the wait for the welcome (default DefaultWelcomeTimeout).
	// After the welcome the read deadline is two heartbeat periods plus a
	// slack, renewed by every frame and ping.
	HandshakeTimeout, WelcomeTimeout time.Duration
	// ReadLimit caps one frame (default DefaultReadLimit).
	ReadLimit int64
	// NetDialContext, when not nil, opens the TCP connection (to choose
	// the source address, say).
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Frame is one frame from the relay, with the fields of every frame type
// (docs/protocol.md sections 2 to 6) and the frame as received in Raw.
type Frame struct {
	Type        string          `json:"type"`
	Event       string          `json:"event"`
	Position    string          `json:"position"`
	Data        json.RawMessage `json:"data"`
	Reason      string          `json:"reason"`
	Code        string          `json:"code"`
	Message     string          `json:"message"`
	Replayed    int             `json:"replayed"`
	SessionID   string          `json:"sessionId"`
	HeartbeatMs int64           `json:"heartbeatMs"`
	Raw         []byte          `json:"-"`
}

// Conn is one connection to a relay. Next is for one goroutine; Close and
// Send may be called from others.
type Conn struct {
	ws      *websocket.Conn
	timeout time.Duration // current read deadline span; 0: none
	within  time.Time     // the deadline of the NextWithin in progress; zero: none
}

// Dial connects. A refused handshake is an error that says the HTTP status
// and the start of the body; IsDrop tells whether retrying may help.
func Dial(ctx context.Context, o Options) (*Conn, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if o.Since != "" {
		q := u.Query()
		q.Set("since", o.Since)
		u.RawQuery = q.Encode()
	}
	header := http.Header{}
	for k, v := range o.Header {
		header[k] = v
	}
	if o.Token != "" {
		header.Set("Authorization", "Bearer "+o.Token)
	}
	d := websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: o.HandshakeTimeout, NetDialContext: o.NetDialContext}
	if d.HandshakeTimeout <= 0 {
		d.HandshakeTimeout = DefaultHandshakeTimeout
	}
	ws, resp, err := d.DialContext(ctx, u.String(), header)
	if err != nil {
		return nil, dialError(err, resp)
	}
	c := &Conn{ws: ws, timeout: o.WelcomeTimeout}
	if c.timeout <= 0 {
		c.timeout = DefaultWelcomeTimeout
	}
	limit := o.ReadLimit
	if limit <= 0 {
		limit = DefaultReadLimit
	}
	ws.SetReadLimit(limit)
	c.extend()
	ws.SetPingHandler(func(data string) error {
		c.extend()
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeWait))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) {
			return nil
		}
		return err
	})
	return c, nil
}

// extend moves the read deadline to a heartbeat (or welcome) timeout from
// now, but never past the deadline of a NextWithin in progress.
func (c *Conn) extend() {
	var dl time.Time
	if c.timeout > 0 {
		dl = time.Now().Add(c.timeout)
	}
	if !c.within.IsZero() && (dl.IsZero() || c.within.Before(dl)) {
		dl = c.within
	}
	_ = c.ws.SetReadDeadline(dl)
}

// Next reads the next text frame. A frame that is not JSON is returned with
// only Raw set; binary frames are skipped. After the welcome, the read
// deadline follows its heartbeat. The error that ends the connection is a
// *CloseError for a close frame; IsDrop tells whether to reconnect.
func (c *Conn) Next() (Frame, error) {
	for {
		kind, msg, err := c.ws.ReadMessage()
		if err != nil {
			return Frame{}, readError(err)
		}
		c.extend()
		if kind != websocket.TextMessage {
			continue
		}
		var f Frame
		_ = json.Unmarshal(msg, &f)
		f.Raw = msg
		if f.Type == "welcome" {
			c.timeout = 0
			if f.HeartbeatMs > 0 {
				c.timeout = 2*time.Duration(f.HeartbeatMs)*time.Millisecond + heartbeatSlack
			}
			c.extend()
		}
		return f, nil
	}
}

// NextWithin reads the next frame, failing when none arrives within d.
func (c *Conn) NextWithin(d time.Duration) (Frame, error) {
	c.within = time.Now().Add(d)
	defer func() { c.within = time.Time{} }()
	_ = c.ws.SetReadDeadline(c.within)
	return c.Next()
}

// Send writes one client message (docs/protocol.md section 6), marshalled
// unless it is a string or []byte already.
func (c *Conn) Send(msg any) error {
	var b []byte
	switch m := msg.(type) {
	case string:
		b = []byte(m)
	case []byte:
		b = m
	default:
		var err error
		if b, err = json.Marshal(m); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// Subscribe asks for events of these entity types only (AI task events
// always come).
func (c *Conn) Subscribe(entities []string) error {
	return c.Send(struct {
		Type     string   `json:"type"`
		Entities []string `json:"entities"`
	}{"subscribe", entities})
}

// Close sends a normal close frame and closes the connection; it is safe
// to call concurrently with Next, and more than once.
func (c *Conn) Close() error {
	_ = c.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return c.ws.Close()
}

// WebSocket returns the underlying connection, for tests of the protocol's
// edges (raw frames, close codes).
func (c *Conn) WebSocket() *websocket.Conn { return c.ws }

// CloseError is a close frame from the relay; its message is the code and
// its reason ("4008 slow consumer"). Errors from Next wrap it.
type CloseError struct {
	Code int
	Text string
}

func (e *CloseError) Error() string {
	desc := strconv.Itoa(e.Code)
	if t := oneLine(e.Text); t != "" {
		desc += " " + t
	} else if n := CloseCodeName(e.Code); n != "" {
		desc += " " + n
	}
	return desc
}

// dropError is an error a reconnect with the last position recovers from.
type dropError struct{ err error }

func (e *dropError) Error() string { return e.err.Error() }
func (e *dropError) Unwrap() error { return e.err }

// IsDrop reports whether err ended a connection in a way a reconnect with
// the last position recovers from: a network error, an HTTP 5xx, 408 or 429
// at the handshake, or the close codes 1001, 1005, 1006, 1011, 1012, 1013
// and 4008. Anything else (4400, 4401, 4403, 4429, 1000, an HTTP 403) is
// final: reconnecting the same way would meet the same answer.
func IsDrop(err error) bool {
	var d *dropError
	return errors.As(err, &d)
}

// dialError classifies a failed handshake.
func dialError(err error, resp *http.Response) error {
	if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
		return &dropError{err: fmt.Errorf("connect: %w", err)}
	}
	status := resp.Status
	if status == "" {
		status = strconv.Itoa(resp.StatusCode)
	}
	var body []byte
	if resp.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
		_ = resp.Body.Close()
	}
	he := &HandshakeError{StatusCode: resp.StatusCode, Status: status, Body: oneLine(string(bytes.TrimSpace(body)))}
	err = fmt.Errorf("connect: %w: %w", err, he)
	code := resp.StatusCode
	if code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests {
		return &dropError{err: err}
	}
	return err
}

// HandshakeError is an upgrade the relay refused with an HTTP answer (a
// foreign Origin gets 403, a draining relay 503); errors from Dial wrap it.
type HandshakeError struct {
	StatusCode int
	Status     string // "403 Forbidden"
	Body       string // the start of the body, on one line
}

func (e *HandshakeError) Error() string {
	if e.Body == "" {
		return "HTTP " + e.Status
	}
	return "HTTP " + e.Status + ": " + e.Body
}

// readError classifies the error that ended a connection.
func readError(err error) error {
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		return &dropError{err: fmt.Errorf("connection lost: %w", err)}
	}
	e := &CloseError{Code: ce.Code, Text: ce.Text}
	switch ce.Code {
	case websocket.CloseGoingAway, websocket.CloseNoStatusReceived, websocket.CloseAbnormalClosure,
		websocket.CloseInternalServerErr, websocket.CloseServiceRestart, websocket.CloseTryAgainLater, 4008:
		return &dropError{err: fmt.Errorf("connection closed: %w", e)}
	}
	return fmt.Errorf("closed by relay: %w", e)
}

// CloseCodeName names the close codes of docs/protocol.md section 7.
func CloseCodeName(code int) string {
	switch code {
	case websocket.CloseNormalClosure:
		return "normal closure"
	case websocket.CloseGoingAway:
		return "relay draining"
	case websocket.CloseNoStatusReceived:
		return "no status"
	case websocket.CloseAbnormalClosure:
		return "connection dropped"
	case websocket.CloseMessageTooBig:
		return "message too big"
	case websocket.CloseInternalServerErr:
		return "internal error"
	case 4008:
		return "slow consumer"
	case 4400:
		return "bad request"
	case 4401:
		return "unauthorized"
	case 4403:
		return "forbidden"
	case 4429:
		return "rate limited"
	}
	return ""
}

// oneLine folds whitespace runs and caps the length, for error text.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 120 {
		s = string(r[:119]) + "…"
	}
	return s
}

// Backoff returns the wait before reconnect attempt n (from 0): a random
// duration in [d/2, d] where d = min(lo·2ⁿ, hi), so that many clients that
// lost one relay do not come back in step.
func Backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := hi
	if attempt < 30 {
		if e := lo << attempt; e > 0 && e < hi {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
