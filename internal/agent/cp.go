package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"banger/internal/tarcopy"
)

// copyOut serves GET /v1/cp?path=P: a tar of the file or tree at P (a final
// symlink is archived as the link). A failure after the stream started is
// the CopyErrorTrailer.
func (s *server) copyOut(w http.ResponseWriter, r *http.Request) {
	p, ok := cpPath(w, r)
	if !ok {
		return
	}
	stat := os.Lstat
	dirSyntax := strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.")
	if dirSyntax {
		stat = os.Stat
	}
	fi, err := stat(p)
	if err != nil {
		cpFail(w, err, p)
		return
	}
	if dirSyntax && !fi.IsDir() {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: p + " is not a directory in the guest"})
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Trailer", CopyErrorTrailer)
	w.WriteHeader(http.StatusOK)
	if err := tarcopy.Write(r.Context(), w, p); err != nil {
		s.opts.Logger.Error("cp: archiving", "path", p, "err", err)
		w.Header().Set(CopyErrorTrailer, fmt.Sprintf("archiving %s in the guest: %v", p, err))
	}
}

// copyIn serves PUT /v1/cp?path=P: the body is a tar, extracted where
// docker cp would put a source named name (a directory with dir=1) given
// P, or, with raw=1, straight into the existing directory P. The
// destination is checked before the body is read (clients send
// Expect: 100-continue). As root, entries keep their owners.
func (s *server) copyIn(w http.ResponseWriter, r *http.Request) {
	p, ok := cpPath(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	var target tarcopy.Target
	if q.Get("raw") == "1" {
		fi, err := os.Stat(p)
		if err != nil {
			cpFail(w, err, p)
			return
		}
		if !fi.IsDir() {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: p + " is not a directory in the guest; a tar from stdin needs one"})
			return
		}
		target = tarcopy.Target{Dir: filepath.Clean(p)}
	} else {
		name := q.Get("name")
		if name == "" || strings.Contains(name, "/") || name == ".." {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "cp needs the source's name (name=)"})
			return
		}
		t, err := tarcopy.Resolve(p, name, q.Get("dir") == "1")
		if err != nil {
			cpFail(w, err, p)
			return
		}
		target = t
	}
	n, err := tarcopy.Extract(r.Body, target, tarcopy.Options{Owners: os.Geteuid() == 0})
	if err != nil {
		s.opts.Logger.Error("cp: extracting", "path", p, "err", err)
		// Entries before the refused one are written: 409, not the 400
		// of a refusal that changed nothing.
		var ue *tarcopy.UserError
		if errors.As(err, &ue) {
			writeJSON(w, http.StatusConflict, errorBody{Error: ue.Msg + " (in the guest)"})
			return
		}
		cpFail(w, err, p)
		return
	}
	writeJSON(w, http.StatusOK, CopyResult{Bytes: n})
}

// cpPath reads the path parameter, which must be absolute.
func cpPath(w http.ResponseWriter, r *http.Request) (string, bool) {
	p := r.URL.Query().Get("path")
	if !strings.HasPrefix(p, "/") {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: fmt.Sprintf("cp needs an absolute guest path, got %q", p)})
		return "", false
	}
	return p, true
}

// cpFail answers a failure: 404 for a missing path, 400 for the user's
// refusals, 500 otherwise; the body says it in one line.
func cpFail(w http.ResponseWriter, err error, p string) {
	var ue *tarcopy.UserError
	switch {
	case errors.As(err, &ue):
		writeJSON(w, http.StatusBadRequest, errorBody{Error: ue.Msg + " (in the guest)"})
	case errors.Is(err, fs.ErrNotExist):
		writeJSON(w, http.StatusNotFound, errorBody{Error: "no such file or directory in the guest: " + p})
	case errors.Is(err, syscall.ENOTDIR):
		writeJSON(w, http.StatusBadRequest, errorBody{Error: p + " is not a directory in the guest"})
	case errors.Is(err, fs.ErrPermission):
		writeJSON(w, http.StatusForbidden, errorBody{Error: "permission denied in the guest: " + p})
	default:
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: err.Error()})
	}
}
