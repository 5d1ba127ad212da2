package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"banger/internal/api"
)

// fill sets every field of v to a random value (strings with escapes,
// unicode and control bytes now and then), so a field added to the API
// types is covered without touching this test.
func fill(r *rand.Rand, v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.String:
		parts := []string{"dev", "a1b2c3", "/tmp/x y/fc.sock", `q"uote`, `back\slash`, "tab\t", "日本", "\u2028", "nul\x00", "\xff", ""}
		var s string
		for range r.IntN(3) {
			s += parts[r.IntN(len(parts))]
		}
		v.SetString(s)
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(r.Int64N(1<<40) - 1<<39)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(r.Uint64N(1 << 31))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(r.Float64() * 1000)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			if r.IntN(4) > 0 {
				v.Set(reflect.ValueOf(time.Unix(r.Int64N(2e9), r.Int64N(1e9)).UTC()))
			}
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(r, v.Field(i), depth)
			}
		}
	case reflect.Slice:
		if depth > 2 || r.IntN(4) == 0 {
			return
		}
		n := r.IntN(4)
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			fill(r, s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Pointer:
		if depth > 2 || r.IntN(3) == 0 {
			return
		}
		p := reflect.New(v.Type().Elem())
		fill(r, p.Elem(), depth+1)
		v.Set(p)
	case reflect.Map:
		if r.IntN(2) == 0 {
			m := reflect.MakeMap(v.Type())
			k := reflect.New(v.Type().Key()).Elem()
			e := reflect.New(v.Type().Elem()).Elem()
			fill(r, k, depth+1)
			fill(r, e, depth+1)
			m.SetMapIndex(k, e)
			v.Set(m)
		}
	}
}

// The fast decoder gives exactly what json.Unmarshal gives for every
// result type the CLI reads, and takes the fast path for them.
func TestFastDecodeMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	types := []any{&api.VMList{}, &api.VM{}, &api.VMResult{}, &api.StatsList{}, &api.Health{}, &api.DaemonStatus{}, &api.Image{}}
	for _, proto := range types {
		typ := reflect.TypeOf(proto).Elem()
		if p := planFor(typ); p.kind != kindStruct {
			t.Errorf("%s: no fast plan", typ)
		}
		for range 300 {
			src := reflect.New(typ)
			fill(r, src.Elem(), 0)
			data, err := json.Marshal(src.Interface())
			if err != nil {
				t.Fatal(err)
			}
			if r.IntN(3) == 0 {
				var buf bytes.Buffer
				json.Indent(&buf, data, "", "  ")
				data = buf.Bytes()
			}
			want := reflect.New(typ).Interface()
			werr := json.Unmarshal(data, want)
			got := reflect.New(typ).Interface()
			_, gerr := decodeInto(data, 0, got)
			if (werr == nil) != (gerr == nil) || !reflect.DeepEqual(got, want) {
				t.Fatalf("%s from %s:\nfast %+v (%v)\njson %+v (%v)", typ, data, got, gerr, want, werr)
			}
		}
	}
}

// Hand-written replies: odd spacing, nulls, keys encoding/json matches
// case-insensitively, unknown members, and broken JSON.
func TestFastDecodeEdges(t *testing.T) {
	for _, body := range []string{
		`{"vms":[]}`,
		`{"vms":null}`,
		` { "vms" : [ { "id" : "a" , "vcpu" : 2 , "nat" : true } , {"name":"b\u00e9","extra":{"x":[1,2,{"y":"}"}]}} ] } `,
		`{"VMS":[{"ID":"upper"}]}`,
		`{"vms":[{"id":"a","Name":"mixed"}]}`,
		`{"vms":[{"id":"a\"b","created_at":"2026-12-01T10:00:00Z","pending_changes":["x"]}]}`,
		`{"vms":[{"vcpu":1e2}]}`,
		`{"vms":[{"vcpu":-0}]}`,
		`{"vms":[{"vcpu":01}]}`,
		`{"vms":[{"vcpu":"2"}]}`,
		`{"vms":[{"cid":-1}]}`,
		`{"vms":[{"vcpu":99999999999999999999}]}`,
		`{"vms":[{"nat":tru}]}`,
		`{"vms":[{"id":"a"}`,
		`{"vms":[{"id":"a"},]}`,
		`{"vms":[{"id" "a"}]}`,
		`{"vms":"nope"}`,
		`{"vms":[{"extra":{"a" 1}}]}`,
		`{"vms":[{"id":null,"created_at":null}]}`,
		`[]`,
		`null`,
	} {
		var want, got api.VMList
		werr := json.Unmarshal([]byte(body), &want)
		_, gerr := decodeInto([]byte(body), 0, &got)
		if gerr == errSlow {
			gerr = json.Unmarshal([]byte(body), &got)
		}
		// On an error the value is not used: only the kind of error
		// (wrong shape or broken JSON) must agree.
		var wt, gt *json.UnmarshalTypeError
		if (werr == nil) != (gerr == nil) || errors.As(werr, &wt) != errors.As(gerr, &gt) || (werr == nil && !reflect.DeepEqual(got, want)) {
			t.Errorf("%s:\nfast %+v (%v)\njson %+v (%v)", body, got, gerr, want, werr)
		}
	}
}

// Whole replies through decodeReply: result, error, nothing.
func TestDecodeReply(t *testing.T) {
	var l api.VMList
	if err := decodeReply("vm.list", []byte(`{"jsonrpc":"2.0","id":7,"result":{"vms":[{"id":"a1","name":"dev"}]}}`), &l); err != nil || len(l.VMs) != 1 || l.VMs[0].Name != "dev" {
		t.Fatalf("%+v %v", l, err)
	}
	err := decodeReply("vm.get", []byte(`{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"gone","data":{"kind":"not_found"}}}`), &api.VM{})
	if e, ok := err.(*api.Error); !ok || e.Message != "gone" || e.Data.Kind != "not_found" {
		t.Fatalf("rpc error: %#v", err)
	}
	if err := decodeReply("vm.touch", []byte(`{"jsonrpc":"2.0","id":7,"result":{"id":"x"}}`), nil); err != nil {
		t.Fatal(err)
	}
	if err := decodeReply("vm.list", []byte(`{"jsonrpc":"2.0","id":7,"Result":{"vms":[{"id":"slow"}]}}`), &l); err != nil || l.VMs[0].ID != "slow" {
		t.Fatalf("case-insensitive member: %+v %v", l, err)
	}
}
