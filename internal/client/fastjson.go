package client

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"
)

// A one-pass decoder for daemon replies. encoding/json scans a value twice
// (validity, then decode) and pays reflection per key; `vm list` with 500
// VMs spent two thirds of its instructions there. This walks the reply once,
// left to right, fills plain fields (strings without escapes, integers,
// booleans, floats, structs and slices of structs made of them) directly,
// and hands every other value — escaped strings, time.Time and other
// Unmarshalers, maps, pointers, slices of non-structs — to encoding/json for
// just that value, so the result is what json.Unmarshal gives. A struct it
// cannot plan (embedded fields, ",string" options) or a key that matches a
// field only case-insensitively sends the whole value to json.Unmarshal.

// errSlow sends a value to json.Unmarshal.
var errSlow = errors.New("not for the fast decoder")

// syntaxError is a reply that is not JSON.
type syntaxError struct {
	msg string
	off int
}

func (e *syntaxError) Error() string { return fmt.Sprintf("%s at offset %d", e.msg, e.off) }

// How a type is decoded.
const (
	kindOther       = iota // json.Unmarshal of the value
	kindPlain              // string, bool, integer or float without custom decoding
	kindStruct             // fields by plan
	kindStructSlice        // a slice of kindStruct
	kindUnmarshaler        // *T implements json.Unmarshaler (time.Time)
)

type typePlan struct {
	kind   int
	fields map[string]fieldPlan // kindStruct
	keys   []string             // kindStruct: every JSON name, in field order
	byKey  []fieldPlan          // kindStruct: the plan of keys[i]
	lower  bool                 // kindStruct: every key is ASCII without capitals
	elem   *typePlan            // kindStructSlice
}

type fieldPlan struct {
	index int
	plan  *typePlan
}

// field finds key's plan. Replies list members in field order, so the key
// after the previous one is tried before the map.
func (p *typePlan) field(key []byte, next *int) (fieldPlan, bool) {
	if i := *next; i < len(p.keys) && p.keys[i] == string(key) {
		*next = i + 1
		return p.byKey[i], true
	}
	f, ok := p.fields[string(key)]
	if ok {
		for i, k := range p.keys {
			if k == string(key) {
				*next = i + 1
			}
		}
	}
	return f, ok
}

var (
	planMu sync.Mutex
	plans  = map[reflect.Type]*typePlan{}

	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func planFor(t reflect.Type) *typePlan {
	planMu.Lock()
	defer planMu.Unlock()
	return planLocked(t)
}

func planLocked(t reflect.Type) *typePlan {
	if p, ok := plans[t]; ok {
		return p
	}
	p := &typePlan{kind: kindOther}
	plans[t] = p // before the fields: a type that contains itself
	pt := reflect.PointerTo(t)
	k := t.Kind()
	switch {
	case k != reflect.Pointer && k != reflect.Interface && pt.Implements(unmarshalerType) && !t.Implements(unmarshalerType):
		p.kind = kindUnmarshaler
	case t.Implements(unmarshalerType) || pt.Implements(unmarshalerType) || t.Implements(textUnmarshalerType) || pt.Implements(textUnmarshalerType):
		// kindOther
	case k == reflect.String || k == reflect.Bool || (k >= reflect.Int && k <= reflect.Uintptr) || k == reflect.Float32 || k == reflect.Float64:
		p.kind = kindPlain
	case k == reflect.Struct:
		fields := map[string]fieldPlan{}
		var keys []string
		var byKey []fieldPlan
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if f.Anonymous || strings.Contains(tag, ",string") {
				return p // kindOther: encoding/json's rules for these are its own
			}
			if !f.IsExported() || tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if name == "" {
				name = f.Name
			}
			fp := fieldPlan{index: i, plan: planLocked(f.Type)}
			fields[name] = fp
			keys = append(keys, name)
			byKey = append(byKey, fp)
		}
		p.kind, p.fields, p.keys, p.byKey = kindStruct, fields, keys, byKey
		p.lower = !slices.ContainsFunc(keys, func(k string) bool { return !asciiLower([]byte(k)) })
	case k == reflect.Slice:
		if e := planLocked(t.Elem()); e.kind == kindStruct {
			p.kind, p.elem = kindStructSlice, e
		}
	}
	return p
}

// decodeInto decodes the JSON value at data[i:] into out (a pointer) and
// returns the offset after it. The strings it stores share data's memory,
// so data must never change afterwards: Call's reply buffer is the only
// caller's and is never reused (the event stream, whose scanner reuses its
// buffer, goes through encoding/json).
func decodeInto(data []byte, i int, out any) (int, error) {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return 0, errSlow
	}
	return decodeAt(data, i, v.Elem(), planFor(v.Elem().Type()))
}

// decodeAt decodes the value at data[i:] into v.
func decodeAt(data []byte, i int, v reflect.Value, p *typePlan) (int, error) {
	switch p.kind {
	case kindStruct:
		if isNullAt(data, i) {
			return i + 4, nil
		}
		return decodeStructAt(data, i, v, p)
	case kindStructSlice:
		if v.IsNil() {
			if isNullAt(data, i) {
				return i + 4, nil
			}
			if i < len(data) && data[i] == '[' {
				return decodeSliceAt(data, i, v, p.elem)
			}
		}
	}
	end, err := skipValue(data, i)
	if err != nil {
		return 0, err
	}
	val := data[i:end]
	switch p.kind {
	case kindPlain:
		if setPlain(val, v) {
			return end, nil
		}
	case kindUnmarshaler:
		if err := v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(val); err != nil {
			return 0, err
		}
		return end, nil
	}
	if err := json.Unmarshal(val, v.Addr().Interface()); err != nil {
		return 0, err
	}
	return end, nil
}

func decodeStructAt(data []byte, i int, v reflect.Value, p *typePlan) (int, error) {
	if i >= len(data) || data[i] != '{' {
		return 0, errSlow // not an object: encoding/json says how it does not fit
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, nil
	}
	next := 0
	for {
		if i >= len(data) || data[i] != '"' {
			return 0, &syntaxError{"want a key", i}
		}
		kend, err := skipString(data, i)
		if err != nil {
			return 0, err
		}
		key := data[i+1 : kend-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return 0, errSlow
		}
		i = skipSpace(data, kend)
		if i >= len(data) || data[i] != ':' {
			return 0, &syntaxError{"want :", i}
		}
		i = skipSpace(data, i+1)
		f, ok := p.field(key, &next)
		if ok {
			i, err = decodeAt(data, i, v.Field(f.index), f.plan)
			if err != nil {
				return 0, fieldError(key, err)
			}
		} else {
			// encoding/json matches keys ignoring case; between ASCII
			// keys without capitals that is the exact match that failed.
			if !p.lower || !asciiLower(key) {
				for _, k := range p.keys {
					if strings.EqualFold(k, string(key)) {
						return 0, errSlow // encoding/json would fill that field
					}
				}
			}
			end, err := skipValue(data, i)
			if err != nil {
				return 0, err
			}
			if data[i] == '{' || data[i] == '[' {
				if !json.Valid(data[i:end]) {
					return 0, &syntaxError{"invalid value for " + strconv.Quote(string(key)), i}
				}
			}
			i = end
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return 0, &syntaxError{"unterminated object", i}
		}
		if data[i] == '}' {
			return i + 1, nil
		}
		if data[i] != ',' {
			return 0, &syntaxError{"want , or } in object", i}
		}
		i = skipSpace(data, i+1)
	}
}

// asciiLower reports whether b is ASCII without capital letters.
func asciiLower(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 || (c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// fieldError keeps encoding/json's error types (the client tells a result
// of the wrong shape from a broken reply by them).
func fieldError(key []byte, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field == "" {
		te.Field = string(key)
	}
	return err
}

func decodeSliceAt(data []byte, i int, v reflect.Value, elem *typePlan) (int, error) {
	s := reflect.New(v.Type()).Elem() // addressable, for Grow and SetLen
	s.Set(reflect.MakeSlice(v.Type(), 0, 8))
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		v.Set(s)
		return i + 1, nil
	}
	for {
		if s.Len() == s.Cap() {
			s.Grow(s.Len()) // doubles; the new tail is zeroed
		}
		// s is fresh: every slot past its length is still zero.
		s.SetLen(s.Len() + 1)
		end, err := decodeAt(data, i, s.Index(s.Len()-1), elem)
		if err != nil {
			return 0, err
		}
		if s.Len() == 1 {
			presize(s, end-i, len(data)-end)
		}
		i = skipSpace(data, end)
		if i >= len(data) {
			return 0, &syntaxError{"unterminated array", i}
		}
		if data[i] == ']' {
			v.Set(s)
			return i + 1, nil
		}
		if data[i] != ',' {
			return 0, &syntaxError{"want , or ] in array", i}
		}
		i = skipSpace(data, i+1)
	}
}

// presize grows s, holding its first element, to the number of elements
// the rest of the reply would hold were they all as long as that one (each
// elemLen bytes of JSON): `vm list` then allocates its 500 VMs once instead
// of doubling to them, a copy and an abandoned array per step. Only
// structs, and only as much memory as about the reply's size: a short
// element early in a big reply must not reserve a huge slice.
func presize(s reflect.Value, elemLen, rest int) {
	et := s.Type().Elem()
	if et.Kind() != reflect.Struct || elemLen <= 0 || et.Size() == 0 {
		return
	}
	n := rest/elemLen + 1
	if limit := 2*rest/int(et.Size()) + 1; n > limit {
		n = limit
	}
	if n > s.Cap() {
		s.Grow(n - s.Len())
	}
}

// setPlain stores a basic value; false leaves it to encoding/json (null,
// escapes, anything unusual), which also gives the right error.
func setPlain(val []byte, v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		if len(val) < 2 || val[0] != '"' {
			return false
		}
		s := val[1 : len(val)-1]
		ascii := true
		for _, c := range s {
			if c < 0x20 || c == '\\' {
				return false
			}
			if c >= 0x80 {
				ascii = false
			}
		}
		if !ascii && !utf8.Valid(s) {
			return false
		}
		if len(s) > 0 {
			// Shares data's memory (see decodeInto): a copy of each of
			// vm list's 10 000 strings was 90 of its page faults.
			v.SetString(unsafe.String(&s[0], len(s)))
		} else {
			v.SetString("")
		}
		return true
	case reflect.Bool:
		switch string(val) {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			return false
		}
		return true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(string(val), 10, 64)
		if err != nil || !validNumber(val) || v.OverflowInt(n) {
			return false
		}
		v.SetInt(n)
		return true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		n, err := strconv.ParseUint(string(val), 10, 64)
		if err != nil || !validNumber(val) || v.OverflowUint(n) {
			return false
		}
		v.SetUint(n)
		return true
	case reflect.Float32, reflect.Float64:
		if !validNumber(val) {
			return false
		}
		n, err := strconv.ParseFloat(string(val), v.Type().Bits())
		if err != nil || v.OverflowFloat(n) {
			return false
		}
		v.SetFloat(n)
		return true
	}
	return false
}

// validNumber is JSON's number grammar.
func validNumber(b []byte) bool {
	i := 0
	digits := func() bool {
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > j
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if i >= len(b) || b[i] < '1' || b[i] > '9' || !digits() {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	return i == len(b)
}

func isNull(b []byte) bool { return string(b) == "null" }

func isNullAt(data []byte, i int) bool {
	return len(data)-i >= 4 && string(data[i:i+4]) == "null" && (len(data)-i == 4 || !isLiteralByte(data[i+4]))
}

func isLiteralByte(c byte) bool {
	return c != ',' && c != '}' && c != ']' && c != ' ' && c != '\n' && c != '\t' && c != '\r'
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\n' || data[i] == '\t' || data[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the offset after the string starting at data[i].
func skipString(data []byte, i int) (int, error) {
	j := i + 1
	for {
		k := bytes.IndexByte(data[j:], '"')
		if k < 0 {
			return 0, &syntaxError{"unterminated string", i}
		}
		j += k
		// An even run of backslashes before the quote: it ends the string.
		n := 0
		for b := j - 1; b > i && data[b] == '\\'; b-- {
			n++
		}
		j++
		if n%2 == 0 {
			return j, nil
		}
	}
}

// skipValue returns the offset after the JSON value starting at data[i].
// Containers are only balanced here; whoever takes one checks it.
func skipValue(data []byte, i int) (int, error) {
	if i >= len(data) {
		return 0, &syntaxError{"want a value", i}
	}
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				end, err := skipString(data, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, &syntaxError{"unterminated value", i}
	}
	j := i
	for j < len(data) && isLiteralByte(data[j]) {
		j++
	}
	switch lit := data[i:j]; {
	case string(lit) == "true", string(lit) == "false", string(lit) == "null", validNumber(lit):
		return j, nil
	}
	return 0, &syntaxError{"invalid literal", i}
}
