package daemon

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"banger/internal/config"
	"banger/internal/hostops"
	"banger/internal/store"
)

// tapRefusingHost fails DeleteTap with the error the seam gives.
type tapRefusingHost struct {
	*fakeHost
	err error
}

func (h *tapRefusingHost) DeleteTap(context.Context, string) error { return h.err }

// TestTeardownTellsRefusalsByKind: a tap the seam refuses to delete (not
// banger's, in either seam mode) never blocks a stop; any other failure
// does. The kind decides, not the message text.
func TestTeardownTellsRefusalsByKind(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		fails bool
	}{
		{"refused through the seam", &hostops.Error{Op: "delete-tap", Kind: hostops.KindRefused, Message: "deleting tap bgt-x: something else"}, false},
		{"message says not banger's but kind is internal", &hostops.Error{Op: "delete-tap", Kind: hostops.KindInternal, Message: "deleting tap bgt-x: not banger's"}, true},
		{"netlink failure", errors.New("deleting tap bgt-x: netlink: operation not permitted"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := testEnv(t)
			paths, err := config.DefaultPaths(getenv)
			if err != nil {
				t.Fatal(err)
			}
			loaded, err := config.Load(paths, getenv)
			if err != nil {
				t.Fatal(err)
			}
			d, err := New(context.Background(), Options{Loaded: loaded, Host: &tapRefusingHost{fakeHost: newFakeHost(), err: tc.err}})
			if err != nil {
				t.Fatal(err)
			}
			defer d.close()
			vm := store.VM{ID: "0123456789", Name: "x", Tap: "bgt-x", IP: netip.MustParseAddr("172.16.0.2"), Dir: t.TempDir()}
			err = d.teardown(context.Background(), &vm)
			if tc.fails != (err != nil) || (err != nil && !strings.Contains(err.Error(), "deleting tap bgt-x")) {
				t.Errorf("teardown = %v; want failure %v", err, tc.fails)
			}
		})
	}
}
