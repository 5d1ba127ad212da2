package cli

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/config"
)

func (a *app) addImageCommands(root *cobra.Command) {
	if !a.wants("image", "images") {
		return
	}
	img := &cobra.Command{
		Use:     "image",
		Short:   "Register, list and delete guest images",
		Aliases: []string{"images"},
	}
	var p api.ImageRegisterParams
	register := &cobra.Command{
		Use:     "register NAME --rootfs PATH [--kernel PATH] [--initrd PATH]",
		Short:   "Copy an ext4 root filesystem (and optional kernel) into banger's state and record it",
		Example: "  banger image register mydebian --rootfs ./rootfs.ext4\n  banger image register custom --rootfs rootfs.ext4 --kernel vmlinux",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p.Name = args[0]
			if p.RootfsPath == "" {
				return usageErrorf("--rootfs is required: the path of an ext4 image")
			}
			for _, s := range []*string{&p.RootfsPath, &p.KernelPath, &p.InitrdPath, &p.ModulesDir} {
				if *s != "" {
					abs, err := filepath.Abs(*s)
					if err != nil {
						return usageErrorf("bad path %q: %v", *s, err)
					}
					*s = abs
				}
			}
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			var out api.Image
			if err := cl.Call(c.Context(), api.MethodImageRegister, p, &out); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "registered image %s (%s, %s)\n", out.Name, out.ID, config.FormatSize(out.SizeBytes))
			return nil
		},
	}
	register.Flags().StringVar(&p.RootfsPath, "rootfs", "", "ext4 root filesystem image")
	register.Flags().StringVar(&p.KernelPath, "kernel", "", "guest kernel (vmlinux) for VMs of this image")
	register.Flags().StringVar(&p.InitrdPath, "initrd", "", "initrd for that kernel")

	var jsonOut bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images",
		Example: "  banger image list\n  banger image list --json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			var l api.ImageList
			if err := cl.Call(c.Context(), api.MethodImageList, nil, &l); err != nil {
				return err
			}
			if jsonOut {
				l.Images = nonNil(l.Images)
				return writeJSON(a.stdout, l)
			}
			t := newTable(a.stdout)
			t.row("NAME", "ID", "SIZE", "KERNEL", "CREATED", "NOTE")
			now := time.Now()
			for _, im := range l.Images {
				k := "default"
				if im.KernelPath != "" {
					k = "own"
				}
				note := ""
				if im.Stale {
					note = "stale: built from an older package list; rebuild it"
				}
				t.row(im.Name, im.ID, config.FormatSize(im.SizeBytes), k, ago(im.CreatedAt, now), note)
			}
			t.flush()
			return nil
		},
	}
	list.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	del := &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete an image (refused while VMs use it)",
		Example: "  banger image delete old",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			if err := cl.Call(c.Context(), api.MethodImageDelete, api.ImageRef{Name: args[0]}, nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "deleted image %s\n", args[0])
			return nil
		},
	}
	img.AddCommand(register, list, del)
	root.AddCommand(img)
}
