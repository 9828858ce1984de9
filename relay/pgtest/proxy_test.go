package pgtest

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestProxyCutHoldsAndRestoreResumes: through the proxy an echo server
// answers; while cut, nothing comes back and a new connection's bytes wait;
// after Restore both are answered, in order.
func TestProxyCutHoldsAndRestoreResumes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	p, err := NewProxy(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	echo := func(c net.Conn, msg string, want bool) {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if !want {
			return
		}
		buf := make([]byte, len(msg))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: got %q, %v", msg, buf, err)
		}
	}
	a, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	echo(a, "one", true)
	p.Cut()
	echo(a, "two", false)
	b, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	echo(b, "three", false)
	// Nothing comes back while cut (a bounded look: the cut holds forever).
	_ = a.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := a.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes during the cut (%v)", n, err)
	}
	p.Restore()
	buf := make([]byte, 3)
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "two" {
		t.Fatalf("after restore: %q, %v", buf, err)
	}
	buf = make([]byte, 5)
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "three" {
		t.Fatalf("connection made during the cut, after restore: %q, %v", buf, err)
	}
}
