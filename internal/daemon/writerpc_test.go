package daemon

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"banger/internal/api"
)

// writeRPC puts a result into the envelope without re-encoding it; the
// bytes are still exactly the encoder's.
func TestWriteRPCBytesMatchEncoder(t *testing.T) {
	res, _ := json.Marshal(api.VMList{VMs: []api.VM{{ID: "a1", Name: "dev", Dir: "/x/<&>/y", State: "running"}, {ID: "b2", Name: "héllo"}}})
	for _, resp := range []api.Response{
		{ID: json.RawMessage(`7`), Result: res},
		{ID: json.RawMessage(`"abc"`), Result: json.RawMessage(`{}`)},
		{Result: json.RawMessage(`null`)},
		{ID: json.RawMessage(`1`), Error: rpcErr(api.CodeInternal, api.KindInternal, "boom")},
	} {
		rec := httptest.NewRecorder()
		writeRPC(rec, resp)
		want := resp
		want.JSONRPC = "2.0"
		if want.ID == nil {
			want.ID = json.RawMessage("null")
		}
		var buf bytes.Buffer
		json.NewEncoder(&buf).Encode(want)
		if rec.Body.String() != buf.String() {
			t.Errorf("writeRPC wrote\n%s\nthe encoder writes\n%s", rec.Body.String(), buf.String())
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("content type %q", ct)
		}
	}
}
