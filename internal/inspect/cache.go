package inspect

import (
	"container/list"
	"sync"
)

// maxCachedText bounds the length of a text kept in the cache, so a few huge statements
// (bulk INSERTs with thousands of rows) cannot pin megabytes each; they are inspected every
// time, which is what they cost anyway.
const maxCachedText = 16 << 10

// lru is a bounded least-recently-used map from a text (a statement, its shape, its number
// skeleton) to what is known of it.
// It is a map plus a list under one mutex: the whole structure is a few lines, and no
// dependency of the module already offers one (a sharded cache would not pay on the two
// cores the proxy targets; the critical section is a map lookup and a list move).
type lru[V any] struct {
	mu    sync.Mutex
	max   int
	order *list.List // front = most recently used; values are *lruEntry[V]
	items map[string]*list.Element
}

type lruEntry[V any] struct {
	key string
	val V
}

func newLRU[V any](max int) *lru[V] {
	if max <= 0 {
		return nil
	}
	return &lru[V]{max: max, order: list.New(), items: make(map[string]*list.Element, max)}
}

// get returns the cached facts for key. A nil *lru (cache disabled) never hits.
func (c *lru[V]) get(key string) (V, bool) {
	var none V
	if c == nil {
		return none, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return none, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruEntry[V]).val, true
}

// getBytes is get for a key held in a byte slice, without converting it to a string.
func (c *lru[V]) getBytes(key []byte) (V, bool) {
	var none V
	if c == nil {
		return none, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[string(key)]
	if !ok {
		return none, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruEntry[V]).val, true
}

// put stores facts for key, evicting the least recently used entry when full.
func (c *lru[V]) put(key string, val V) {
	if c == nil || len(key) > maxCachedText {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value.(*lruEntry[V]).val = val
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&lruEntry[V]{key: key, val: val})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*lruEntry[V]).key)
	}
}

// len reports the number of cached texts.
func (c *lru[V]) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
