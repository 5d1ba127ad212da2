package store

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestImageCRUD(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := Image{Name: "debian", RootfsPath: "/s/rootfs.ext4", KernelPath: "/s/vmlinux", InitrdPath: "/s/initrd",
		ModulesDir: "/s/modules", SizeBytes: 1 << 30, PackagesHash: "abc", Source: SourceRegistered,
		CreatedAt: time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)}
	if err := s.CreateImage(ctx, &img); err != nil {
		t.Fatal(err)
	}
	if !validID(img.ID) {
		t.Fatalf("id %q", img.ID)
	}
	for _, get := range []func() (Image, error){
		func() (Image, error) { return s.GetImage(ctx, img.ID) },
		func() (Image, error) { return s.GetImageByName(ctx, "debian") },
	} {
		got, err := get()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, img) {
			t.Errorf("read back\n got %+v\nwant %+v", got, img)
		}
	}
	mustImage(t, s, "alpine")
	list, err := s.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "alpine" || list[1].Name != "debian" {
		t.Errorf("ListImages = %+v", list)
	}

	dup := Image{Name: "debian", RootfsPath: "/x", Source: SourceBuilt}
	if err := s.CreateImage(ctx, &dup); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), `"debian"`) {
		t.Errorf("duplicate name: %v, want ErrConflict naming debian", err)
	}
	for _, bad := range []struct {
		img  Image
		want string
	}{
		{Image{RootfsPath: "/x", Source: SourceBuilt}, "empty name"},
		{Image{Name: "x", Source: SourceBuilt}, "empty rootfs path"},
		{Image{Name: "x", RootfsPath: "/x", Source: "stolen"}, `source "stolen"`},
		{Image{ID: "nothex!!!!", Name: "x", RootfsPath: "/x", Source: SourceBuilt}, "10 lowercase hex"},
	} {
		if err := s.CreateImage(ctx, &bad.img); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("CreateImage(%+v) = %v, want error mentioning %q", bad.img, err, bad.want)
		}
	}

	if err := s.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"GetImage":       func() error { _, err := s.GetImage(ctx, img.ID); return err }(),
		"GetImageByName": func() error { _, err := s.GetImageByName(ctx, "debian"); return err }(),
		"DeleteImage":    s.DeleteImage(ctx, img.ID),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s after delete: %v, want ErrNotFound", name, err)
		}
	}
}

func TestDeleteImageInUse(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := mustImage(t, s, "debian")
	other := mustImage(t, s, "alpine")
	b := mustVM(t, s, img, "b")
	a := mustVM(t, s, img, "a")
	mustVM(t, s, other, "c")

	err := s.DeleteImage(ctx, img.ID)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("DeleteImage in use: %v, want ErrConflict", err)
	}
	if want := "image debian is used by vm a, b; delete them first"; err.Error() != want {
		t.Errorf("message = %q, want %q", err, want)
	}
	if _, err := s.GetImage(ctx, img.ID); err != nil {
		t.Fatalf("image gone after refused delete: %v", err)
	}
	// The schema refuses it too, whoever writes.
	if _, err := s.DB().ExecContext(ctx, `DELETE FROM images WHERE id = ?`, img.ID); err == nil {
		t.Fatal("raw delete of an image in use succeeded")
	} else if c, ok := asConstraint(err); !ok || !c.foreignKey {
		t.Fatalf("raw delete: %v, want a foreign key violation", err)
	}

	for _, vm := range []VM{a, b} {
		if err := s.DeleteVM(ctx, vm.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteImage(ctx, img.ID); err != nil {
		t.Fatalf("DeleteImage once unused: %v", err)
	}
}
