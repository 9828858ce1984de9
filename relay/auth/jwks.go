package auth

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
)

// maxJWKSBytes bounds the key set document read from the identity
// provider.
const maxJWKSBytes = 1 << 20

// JWKSOptions configures a JWKS.
type JWKSOptions struct {
	// URL is the key set's address (http or https); required.
	URL string
	// Client fetches it. Nil: a client with a 10 s timeout.
	Client *http.Client
	// Refresh is how often Run refetches the set. Default 15 minutes.
	Refresh time.Duration
	// MinInterval is the least time between two fetches: a token naming
	// an unknown key id refetches at most this often, and Run retries a
	// failed fetch this often. Default 30 s.
	MinInterval time.Duration
	// OnFetch, when not nil, is called after every fetch with its error
	// (nil on success) and the number of keys held after it.
	OnFetch func(err error, keys int)
	Logger  *slog.Logger
	// Now returns the current time. Nil: time.Now.
	Now func() time.Time
}

// jwk is one signing key of a set.
type jwk struct {
	kid string
	alg string // the key's alg parameter, or "" when it names none
	key crypto.PublicKey
}

// JWKS is a JSON Web Key Set fetched from an identity provider and cached.
// A token naming a key id the set lacks makes it refetch, at most once
// every MinInterval; while the provider is down the last set fetched keeps
// serving. It is safe for concurrent use.
type JWKS struct {
	o         JWKSOptions
	first     chan struct{} // closed when the first fetch ended
	firstOnce sync.Once
	mu        sync.Mutex
	keys      []jwk
	last      time.Time     // when the last fetch started; zero before the first
	done      chan struct{} // closed when the fetch in progress ends; nil when none is
}

// NewJWKS returns a key set for o; it fetches nothing until Run or the
// first lookup.
func NewJWKS(o JWKSOptions) (*JWKS, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("new jwks: %q is not an http or https URL", o.URL)
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Refresh <= 0 {
		o.Refresh = 15 * time.Minute
	}
	if o.MinInterval <= 0 {
		o.MinInterval = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &JWKS{o: o, first: make(chan struct{})}, nil
}

// Run fetches the set at once, then every Refresh, or every MinInterval
// (at least a second) after a failed fetch, until ctx ends; it returns
// ctx's error.
func (j *JWKS) Run(ctx context.Context) error {
	for {
		wait := j.o.Refresh
		if _, err := j.fetch(ctx, false); err != nil {
			wait = max(j.o.MinInterval, time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Fetch fetches the set now and, when it parses, replaces the keys held;
// on failure the keys held stay. It waits for a fetch already under way
// instead of starting another (and then returns nil).
func (j *JWKS) Fetch(ctx context.Context) error {
	_, err := j.fetch(ctx, false)
	return err
}

// Keys returns how many keys the set holds.
func (j *JWKS) Keys() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.keys)
}

// Fetched is closed once the first fetch has ended, successful or not.
func (j *JWKS) Fetched() <-chan struct{} { return j.first }

// lookup returns the keys of id kid, or every key when kid is empty. When
// no key has that id and the last fetch started at least MinInterval ago,
// it refetches first. A fetch already under way is waited for instead;
// when that one started before the lookup (it may predate the key) and
// did not bring the key, the lookup fetches again if it is due.
func (j *JWKS) lookup(kid string) []jwk {
	keys, ok := j.find(kid)
	if ok || kid == "" {
		return keys
	}
	asked := j.o.Now()
	for {
		j.mu.Lock()
		busy, last := j.done, j.last
		j.mu.Unlock()
		switch {
		case busy != nil:
			<-busy
			if keys, ok := j.find(kid); ok || !last.Before(asked) {
				return keys
			}
		case last.IsZero() || j.o.Now().Sub(last) >= j.o.MinInterval:
			ctx, cancel := context.WithTimeout(context.Background(), j.o.Client.Timeout+time.Second)
			_, _ = j.fetch(ctx, true) // reported through OnFetch
			cancel()
			keys, _ := j.find(kid)
			return keys
		default:
			return nil
		}
	}
}

// refetch fetches the set again when the last fetch started at least
// MinInterval ago (waiting for one under way instead), and reports
// whether the set was fetched.
func (j *JWKS) refetch() bool {
	ctx, cancel := context.WithTimeout(context.Background(), j.o.Client.Timeout+time.Second)
	defer cancel()
	fetched, err := j.fetch(ctx, true)
	return fetched && err == nil
}

// find returns the keys of id kid (every key when kid is empty) and
// whether any matched.
func (j *JWKS) find(kid string) ([]jwk, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if kid == "" {
		return j.keys, len(j.keys) > 0
	}
	var keys []jwk
	for _, k := range j.keys {
		if k.kid == kid {
			keys = append(keys, k)
		}
	}
	return keys, len(keys) > 0
}

// fetch reads the set and, when it parses, replaces the keys held; on
// failure the keys held stay. One fetch runs at a time; a caller finding
// one under way waits for it and returns true and nil. With ifDue, it
// fetches only when the last fetch started at least MinInterval ago (or
// none has), as it finds things when it would start: a caller that saw a
// fetch due, and lost the race to another that fetched and ended in the
// meantime, does not fetch again. It reports whether it fetched or waited
// for a fetch.
func (j *JWKS) fetch(ctx context.Context, ifDue bool) (bool, error) {
	j.mu.Lock()
	if busy := j.done; busy != nil {
		j.mu.Unlock()
		<-busy
		return true, nil
	}
	if ifDue && !j.last.IsZero() && j.o.Now().Sub(j.last) < j.o.MinInterval {
		j.mu.Unlock()
		return false, nil
	}
	done := make(chan struct{})
	j.last, j.done = j.o.Now(), done
	j.mu.Unlock()

	keys, err := j.read(ctx)

	j.mu.Lock()
	if err == nil && len(keys) == 0 && len(j.keys) > 0 {
		// A set with no key the relay accepts would refuse every token:
		// more likely a broken answer than a real set; keep the last one.
		err = errors.New("jwks: the key set holds no key the relay accepts; the keys fetched before stay in use")
	}
	if err == nil {
		j.keys = keys
	}
	n := len(j.keys)
	j.done = nil
	j.mu.Unlock()
	close(done)
	j.firstOnce.Do(func() { close(j.first) })
	if err != nil {
		j.o.Logger.Warn("jwks fetch failed; the keys fetched before stay in use", "url", j.o.URL, "keys", n, "err", err)
	} else {
		j.o.Logger.Debug("jwks fetched", "url", j.o.URL, "keys", n)
	}
	if j.o.OnFetch != nil {
		j.o.OnFetch(err, n)
	}
	return true, err
}

// read fetches and parses the set. Keys for encryption, keys of kinds
// Verify does not accept and weak keys are left out; a document that is
// not a key set is an error.
func (j *JWKS) read(ctx context.Context) ([]jwk, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.o.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := j.o.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks: %s answered %s", j.o.URL, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks: read: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks: the key set is over %d bytes", maxJWKSBytes)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("jwks: not a JSON Web Key Set: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New("jwks: not a JSON Web Key Set: no keys array")
	}
	keys := make([]jwk, 0, len(set.Keys))
	for _, raw := range set.Keys {
		k, err := jwkset.NewJWKFromRawJSON(raw, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			j.o.Logger.Debug("jwks: key left out", "err", err)
			continue
		}
		m := k.Marshal()
		if m.USE != "" && m.USE != jwkset.UseSig {
			continue
		}
		key := k.Key()
		if p, ok := key.(interface{ Public() crypto.PublicKey }); ok {
			key = p.Public()
		}
		if err := checkPublicKey(key); err != nil {
			j.o.Logger.Warn("jwks: key left out", "kid", m.KID, "err", err)
			continue
		}
		if _, ok := algFamilies[m.ALG.String()]; m.ALG != "" && !ok {
			continue // an algorithm Verify never accepts
		}
		keys = append(keys, jwk{kid: m.KID, alg: m.ALG.String(), key: key})
	}
	return keys, nil
}
