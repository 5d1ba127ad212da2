package daemon

import "sync"

// vmLocks serializes operations on one VM while different VMs proceed in
// parallel. Entries are reference counted and dropped when unused.
type vmLocks struct {
	mu    sync.Mutex
	locks map[string]*vmLock
}

type vmLock struct {
	mu   sync.Mutex
	refs int
}

func newVMLocks() *vmLocks { return &vmLocks{locks: map[string]*vmLock{}} }

// lock takes the VM's lock and returns its release.
func (l *vmLocks) lock(id string) func() {
	l.mu.Lock()
	e, ok := l.locks[id]
	if !ok {
		e = &vmLock{}
		l.locks[id] = e
	}
	e.refs++
	l.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(l.locks, id)
		}
		l.mu.Unlock()
	}
}

// tryLock takes the lock only if it is free.
func (l *vmLocks) tryLock(id string) (func(), bool) {
	l.mu.Lock()
	e, ok := l.locks[id]
	if !ok {
		e = &vmLock{}
		l.locks[id] = e
	}
	e.refs++
	l.mu.Unlock()
	if !e.mu.TryLock() {
		l.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(l.locks, id)
		}
		l.mu.Unlock()
		return nil, false
	}
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(l.locks, id)
		}
		l.mu.Unlock()
	}, true
}
