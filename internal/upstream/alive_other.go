//go:build !unix

package upstream

// alive cannot peek at a socket portably here; a dead connection fails at its first use.
func alive(c *Conn) bool { return len(c.unread) == 0 }
