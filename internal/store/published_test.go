package store

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestPublished: a VM's published ports are recorded, listed, refused when
// another VM (or it) holds an overlapping host address and port, removed
// by port, and go with the VM.
func TestPublished(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := mustImage(t, s, "debian")
	web := mustVM(t, s, img, "web")
	db := mustVM(t, s, img, "db")
	pub := func(p Published) error { return s.Write(ctx, func(tx *Tx) error { return tx.Publish(p) }) }

	for _, p := range []Published{
		{VMID: web.ID, HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80},
		{VMID: web.ID, HostAddr: "127.0.0.1", HostPort: 8443, GuestPort: 443},
		{VMID: db.ID, HostAddr: "127.0.0.2", HostPort: 8080, GuestPort: 5432}, // another address, same port
		{VMID: db.ID, HostAddr: "::ffff:127.0.0.1", HostPort: 5432, GuestPort: 5432},
	} {
		if err := pub(p); err != nil {
			t.Fatalf("Publish(%+v): %v", p, err)
		}
	}
	got, err := s.Published(ctx, web.ID)
	want := []Published{{web.ID, "127.0.0.1", 8080, 80}, {web.ID, "127.0.0.1", 8443, 443}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Published(web) = %+v, %v; want %+v", got, err, want)
	}
	if got, _ := s.Published(ctx, db.ID); len(got) != 2 || got[0].HostAddr != "127.0.0.1" || got[0].HostPort != 5432 {
		t.Fatalf("Published(db) = %+v (a v4-mapped address is stored as IPv4)", got)
	}

	for _, tc := range []struct {
		p    Published
		want string
	}{
		{Published{VMID: db.ID, HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 81}, "127.0.0.1:8080 is already published by vm web (to its port 80)"},
		{Published{VMID: web.ID, HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 81}, "by vm web"},
		{Published{VMID: db.ID, HostAddr: "0.0.0.0", HostPort: 8443, GuestPort: 1}, "127.0.0.1:8443 is already published by vm web"},
	} {
		err := pub(tc.p)
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Publish(%+v) = %v; want a conflict containing %q", tc.p, err, tc.want)
		}
	}
	for _, bad := range []Published{
		{VMID: web.ID, HostAddr: "localhost", HostPort: 1, GuestPort: 1},
		{VMID: web.ID, HostAddr: "127.0.0.1", HostPort: 0, GuestPort: 1},
		{VMID: web.ID, HostAddr: "127.0.0.1", HostPort: 1, GuestPort: 65536},
	} {
		if err := pub(bad); err == nil || errors.Is(err, ErrConflict) {
			t.Errorf("Publish(%+v) = %v; want a refusal", bad, err)
		}
	}
	if err := pub(Published{VMID: "nope", HostAddr: "127.0.0.1", HostPort: 9999, GuestPort: 1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Publish for a missing vm = %v; want not found", err)
	}

	// Unpublish by port; one failing transaction removes nothing.
	var gone []Published
	if err := s.Write(ctx, func(tx *Tx) error {
		var err error
		gone, err = tx.Unpublish(web.ID, "", 8443)
		return err
	}); err != nil || len(gone) != 1 || gone[0].GuestPort != 443 {
		t.Fatalf("Unpublish(8443) = %+v, %v", gone, err)
	}
	err = s.Write(ctx, func(tx *Tx) error { _, err := tx.Unpublish(web.ID, "127.0.0.2", 8080); return err })
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "127.0.0.2:8080 is not published") {
		t.Errorf("Unpublish on another address = %v; want not found", err)
	}
	if got, _ := s.Published(ctx, web.ID); len(got) != 1 || got[0].HostPort != 8080 {
		t.Fatalf("after unpublish: %+v", got)
	}

	if err := s.DeleteVM(ctx, web.ID); err != nil {
		t.Fatal(err)
	}
	all, err := s.AllPublished(ctx)
	if err != nil || len(all) != 2 || all[0].VMID != db.ID || all[1].VMID != db.ID {
		t.Fatalf("AllPublished after deleting web = %+v, %v; want only db's", all, err)
	}
	if err := pub(Published{VMID: db.ID, HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80}); err != nil {
		t.Errorf("a deleted vm's port is still held: %v", err)
	}
}

func TestPublishedHostAddrPort(t *testing.T) {
	for p, want := range map[Published]string{
		{HostAddr: "127.0.0.1", HostPort: 80}: "127.0.0.1:80",
		{HostAddr: "::1", HostPort: 8080}:     "[::1]:8080",
	} {
		if got := p.HostAddrPort(); got != want {
			t.Errorf("%+v.HostAddrPort() = %q, want %q", p, got, want)
		}
	}
}
