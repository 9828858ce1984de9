package session

import (
	"hash/maphash"
	"sync"

	"github.com/olahol/melody"
)

// connShards is how many shards a connTable has: every frame written looks
// its connection up, from the connection's writer goroutine.
const connShards = 16

// connTable maps the melody sessions of open connections to their WSConns:
// an entry costs less than the Keys map melody would make per session, and
// a lookup takes a shard's read lock only.
type connTable struct {
	seed   maphash.Seed
	shards [connShards]struct {
		mu sync.RWMutex
		m  map[*melody.Session]*WSConn
		_  [32]byte // a shard per cache line
	}
}

func newConnTable() *connTable { return &connTable{seed: maphash.MakeSeed()} }

func (ct *connTable) shard(ms *melody.Session) int {
	return int(maphash.Comparable(ct.seed, ms) % connShards)
}

// get returns the WSConn of ms, or nil.
func (ct *connTable) get(ms *melody.Session) *WSConn {
	sh := &ct.shards[ct.shard(ms)]
	sh.mu.RLock()
	c := sh.m[ms]
	sh.mu.RUnlock()
	return c
}

func (ct *connTable) put(ms *melody.Session, c *WSConn) {
	sh := &ct.shards[ct.shard(ms)]
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = make(map[*melody.Session]*WSConn)
	}
	sh.m[ms] = c
	sh.mu.Unlock()
}

func (ct *connTable) remove(ms *melody.Session) {
	sh := &ct.shards[ct.shard(ms)]
	sh.mu.Lock()
	delete(sh.m, ms)
	sh.mu.Unlock()
}
