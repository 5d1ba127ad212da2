package daemon

import (
	"errors"
	"strings"
	"testing"

	"banger/internal/api"
)

// TestPublishedRPC: vm.create and vm.set record published ports, refuse bad
// specs and ports another VM holds with nothing changed (one transaction),
// vm.ports lists them as not held while the VM does not run, and a delete
// frees them.
func TestPublishedRPC(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	r.registerImage()
	var res api.VMResult
	r.mustCall(api.MethodVMCreate, api.VMCreateParams{Name: "web", NoStart: true, Publish: []string{"8080:80", "0.0.0.0:8443:443"}}, &res)

	kind := func(err error) string {
		var re *api.Error
		if errors.As(err, &re) {
			return re.Data.Kind
		}
		return ""
	}
	err := r.call(api.MethodVMCreate, api.VMCreateParams{Name: "other", NoStart: true, Publish: []string{"127.0.0.1:8443:1"}}, &res)
	if kind(err) != api.KindConflict || !strings.Contains(err.Error(), "0.0.0.0:8443 is already published by vm web") || !strings.Contains(err.Error(), "vm other not created") {
		t.Fatalf("create with web's port: %v", err)
	}
	err = r.call(api.MethodVMCreate, api.VMCreateParams{Name: "other", NoStart: true, Publish: []string{"8080"}}, &res)
	if kind(err) != api.KindInvalid || !strings.Contains(err.Error(), "[ADDR:]HOST:GUEST") {
		t.Fatalf("create with a bad spec: %v", err)
	}
	if vms := r.vms(); len(vms) != 1 {
		t.Fatalf("refused creates left vms: %+v", vms)
	}
	other := r.create("other")

	// One transaction: a taken port undoes the unpublish given with it.
	err = r.call(api.MethodVMSet, api.VMSetParams{Ref: "web", Unpublish: []string{"8080"}, Publish: []string{"9000:1", "9000:2"}}, &res)
	if kind(err) != api.KindConflict || !strings.Contains(err.Error(), "127.0.0.1:9000 is already published by vm web") {
		t.Fatalf("set publishing one port twice: %v", err)
	}
	err = r.call(api.MethodVMSet, api.VMSetParams{Ref: "web", Unpublish: []string{"9999"}}, &res)
	if kind(err) != api.KindInvalid || !strings.Contains(err.Error(), "host port 9999 is not published by vm web") {
		t.Fatalf("unpublish of an unknown port: %v", err)
	}
	var ports api.VMPorts
	r.mustCall(api.MethodVMPorts, api.VMRef{Ref: "web"}, &ports)
	if len(ports.Forwards) != 2 || ports.Forwards[0].Requested != 8080 || ports.Forwards[0].Error != "vm is created" ||
		ports.Forwards[1].Host() != "0.0.0.0:8443" || !strings.Contains(ports.Note, "is created") || !ports.AutoForward {
		t.Fatalf("vm.ports after refused sets: %+v", ports)
	}

	r.mustCall(api.MethodVMSet, api.VMSetParams{Ref: "web", Unpublish: []string{"0.0.0.0:8443"}, Publish: []string{"[::1]:8081:81"}}, &res)
	r.mustCall(api.MethodVMPorts, api.VMRef{Ref: "web"}, &ports)
	if len(ports.Forwards) != 2 || ports.Forwards[0].GuestPort != 80 || ports.Forwards[1].Host() != "[::1]:8081" {
		t.Fatalf("vm.ports after set: %+v", ports)
	}
	if err := r.call(api.MethodVMSet, api.VMSetParams{Ref: other.Name, Publish: []string{"8080:1"}}, &res); kind(err) != api.KindConflict {
		t.Fatalf("other publishing web's port: %v", err)
	}
	r.mustCall(api.MethodVMDelete, api.VMRef{Ref: "web"}, &res)
	r.mustCall(api.MethodVMSet, api.VMSetParams{Ref: other.Name, Publish: []string{"8080:1"}}, &res)
}
