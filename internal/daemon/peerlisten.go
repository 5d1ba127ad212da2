package daemon

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// peerListener admits a connection to the daemon socket only when its
// SO_PEERCRED can be read and names the daemon's uid or root, and while
// that uid and all peers together stay under their connection caps. Every
// other connection is closed at accept, before the HTTP server sees it.
type peerListener struct {
	net.Listener
	uid    int
	limits serverLimits
	log    *slog.Logger

	mu      sync.Mutex
	perUID  map[int]int
	total   int
	dropped int       // since the last log line
	logged  time.Time // when drops were last logged
}

func newPeerListener(l net.Listener, daemonUID int, limits serverLimits, log *slog.Logger) *peerListener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &peerListener{Listener: l, uid: daemonUID, limits: limits, log: log, perUID: map[int]int{}}
}

// Accept returns the next admitted connection.
func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p := connPeer(c)
		if err := l.admit(p); err != nil {
			c.Close()
			l.noteDrop(p, err)
			continue
		}
		return &peerConn{Conn: c, peer: p, l: l}, nil
	}
}

// admit checks p and, when it may connect, counts its connection.
func (l *peerListener) admit(p peerCred) error {
	if !p.OK {
		return fmt.Errorf("peer credentials could not be read")
	}
	if err := checkPeer(p.UID, l.uid); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limits.Total > 0 && l.total >= l.limits.Total {
		return fmt.Errorf("%d connections open, the daemon's limit", l.total)
	}
	if l.limits.PerUID > 0 && l.perUID[p.UID] >= l.limits.PerUID {
		return fmt.Errorf("uid %d has %d connections open, the limit per uid", p.UID, l.perUID[p.UID])
	}
	l.perUID[p.UID]++
	l.total++
	return nil
}

func (l *peerListener) release(uid int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perUID[uid]--; l.perUID[uid] <= 0 {
		delete(l.perUID, uid)
	}
}

// open reports the admitted connections still open (tests).
func (l *peerListener) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// noteDrop logs dropped connections, at most one line every 10 seconds
// so a flood cannot flood the log.
func (l *peerListener) noteDrop(p peerCred, why error) {
	l.mu.Lock()
	l.dropped++
	if time.Since(l.logged) < 10*time.Second {
		l.mu.Unlock()
		return
	}
	n := l.dropped
	l.dropped, l.logged = 0, time.Now()
	l.mu.Unlock()
	l.log.Warn("dropped connections to the daemon socket", "count", n, "peer_uid", p.UID, "peer_pid", p.PID, "reason", why.Error())
}

// peerConn is an admitted connection; closing it frees its slot.
type peerConn struct {
	net.Conn
	peer peerCred
	l    *peerListener
	once sync.Once
}

func (c *peerConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.peer.UID) })
	return err
}
