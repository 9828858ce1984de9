package session

import (
	"net/url"
	"strings"
)

// originPolicy is the browser origin allow-list: exact origins, and
// patterns such as https://*.example.com, whose wildcard stands for one or
// more labels at the left of the host; a pattern's scheme and port must
// match exactly (no port matches only an origin without one).
type originPolicy struct {
	exact    map[string]bool
	patterns []originPattern
}

type originPattern struct {
	scheme string // "https"
	suffix string // ".example.com"
	port   string // "" or "8443"
}

// newOriginPolicy parses the allow-list. An entry whose host starts with
// "*." is a pattern; an entry that is not an origin or a pattern (config
// validation refuses those) matches nothing.
func newOriginPolicy(origins []string) originPolicy {
	p := originPolicy{exact: make(map[string]bool)}
	for _, o := range origins {
		o = strings.ToLower(strings.TrimRight(o, "/"))
		if !strings.Contains(o, "*") {
			p.exact[o] = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" {
			continue
		}
		rest, ok := strings.CutPrefix(u.Hostname(), "*")
		if !ok || !strings.HasPrefix(rest, ".") || strings.Contains(rest, "*") || strings.Count(rest, ".") < 2 {
			continue
		}
		p.patterns = append(p.patterns, originPattern{scheme: u.Scheme, suffix: rest, port: u.Port()})
	}
	return p
}

// allows reports whether origin, an Origin header's value, is allowed.
func (p originPolicy) allows(origin string) bool {
	u, err := url.Parse(strings.ToLower(origin))
	if err != nil || u.Host == "" {
		return false
	}
	if p.exact[u.Scheme+"://"+u.Host] {
		return true
	}
	host, port := u.Hostname(), u.Port()
	for _, pt := range p.patterns {
		if pt.scheme != u.Scheme || pt.port != port {
			continue
		}
		labels, ok := strings.CutSuffix(host, pt.suffix)
		if ok && labels != "" && !strings.HasPrefix(labels, ".") && !strings.HasSuffix(labels, ".") && !strings.Contains(labels, "..") {
			return true
		}
	}
	return false
}
