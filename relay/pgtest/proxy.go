package pgtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Proxy is a TCP proxy on loopback for network fault tests: clients connect
// to Addr and are forwarded to a target address. Cut stops all forwarding
// as a network cut does, silently (no reset, no close: bytes sent in either
// direction wait, and new connections are accepted but not forwarded), and
// Restore resumes it. Close it when done.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	flowing chan struct{} // closed while forwarding; replaced by Cut
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// NewProxy listens on a free loopback port and forwards to target
// (host:port).
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	flowing := make(chan struct{})
	close(flowing)
	p := &Proxy{ln: ln, target: target, flowing: flowing, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the host:port clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut stops forwarding until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
		p.flowing = make(chan struct{})
	default:
	}
}

// Restore resumes forwarding, what waited first.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flowing:
	default:
		close(p.flowing)
	}
}

// wait returns once forwarding flows, or false when the proxy closed.
func (p *Proxy) wait() bool {
	p.mu.Lock()
	flowing, closed := p.flowing, p.closed
	p.mu.Unlock()
	if closed {
		return false
	}
	<-flowing
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed
}

// Close stops listening, closes every connection and waits for the
// forwarding goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	select {
	case <-p.flowing:
	default:
		close(p.flowing)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			// A connection made during a cut is not forwarded until it
			// ends: its handshake waits.
			if !p.wait() {
				_ = c.Close()
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil || !p.track(u) {
				_ = c.Close()
				return
			}
			var both sync.WaitGroup
			both.Add(2)
			go func() { defer both.Done(); p.pipe(u, c) }()
			go func() { defer both.Done(); p.pipe(c, u) }()
			both.Wait()
		}()
	}
}

// pipe copies src to dst, holding each read while the network is cut; at
// the end of src it closes dst for writing (or whole), so the other side
// sees the end as it would have.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.wait() {
				break
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && p.wait() {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
					return
				}
			}
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
}
