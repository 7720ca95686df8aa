package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/backup"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// apiError is the body of every error response:
// {"error":{"code":"not_found","message":"..."}}.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeJSON writes v indented, for people reading replies in a terminal.
func writeJSON(w http.ResponseWriter, status int, v any) {
	encodeJSON(w, status, v, true)
}

func encodeJSON(w http.ResponseWriter, status int, v any, indent bool) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	if indent {
		enc.SetIndent("", "  ")
	}
	_ = enc.Encode(v)
}

// compactListAbove is the length past which a list is written without
// indentation: the reader of a long list is a program (the console, a
// script), and the indentation is a third of its bytes.
const compactListAbove = 100

// writeList writes {key: list}, an empty list as [] rather than null.
func writeList[T any](w http.ResponseWriter, key string, list []T) {
	if list == nil {
		list = []T{}
	}
	encodeJSON(w, http.StatusOK, map[string]any{key: list}, len(list) <= compactListAbove)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var e apiError
	e.Error.Code, e.Error.Message = code, msg
	writeJSON(w, status, e)
}

// badRequest is an input error the client can fix.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func invalid(format string, args ...any) error { return badRequest{fmt.Sprintf(format, args...)} }

// fail maps an error to its status and writes it. Unexpected errors are
// logged with their cause.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var br badRequest
	var fb forbidden
	var quota quotaError
	var startQuota *compute.QuotaError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &fb):
		writeError(w, http.StatusForbidden, "forbidden", err.Error())
	case errors.As(err, &quota):
		writeError(w, http.StatusForbidden, "quota_exceeded", err.Error())
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the request body is over %d bytes", maxBody))
	case errors.As(err, &br), errors.Is(err, compute.ErrInvalidRole), errors.Is(err, backup.ErrOutsideWindow):
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
	case errors.As(err, &startQuota):
		writeError(w, http.StatusTooManyRequests, "quota_exceeded", startQuota.Msg)
	case errors.Is(err, compute.ErrNodeFull):
		writeError(w, http.StatusServiceUnavailable, "node_full", err.Error()+"; suspend a compute or raise compute.local.max_memory")
	case errors.Is(err, store.ErrNotFound), errors.Is(err, compute.ErrNoCompute):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, store.ErrAlreadyExists):
		writeError(w, http.StatusConflict, "already_exists", err.Error())
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrInUse),
		errors.Is(err, compute.ErrDestroying), errors.Is(err, compute.ErrOtherNode),
		errors.Is(err, errBackupsOff), errors.Is(err, backup.ErrNoData), errors.Is(err, compute.ErrCannotRestore):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case s.storeDown(r):
		s.log.Warn("request failed: the state store is unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusServiceUnavailable, "store_unavailable",
			"the state store is unavailable; retry shortly ("+err.Error()+")")
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

// storeDown tells an outage of the state store (503: retry) from a failure
// of the request itself (500). It runs only on the error path.
func (s *Server) storeDown(r *http.Request) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 2*time.Second)
	defer cancel()
	return s.st.Ping(ctx) != nil
}

// decode reads a JSON body of at most maxBody bytes into v, rejecting
// unknown fields and trailing data.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return err
		case errors.Is(err, io.EOF):
			return invalid("the request body is empty; send a JSON object")
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return invalid("%s", clip(strings.TrimPrefix(err.Error(), "json: ")))
		default:
			return invalid("invalid JSON: %v", err)
		}
	}
	if dec.More() {
		return invalid("invalid JSON: unexpected data after the object")
	}
	return nil
}

// clip shortens a message that quotes client input, which may be up to
// maxBody long, to what a reader needs.
func clip(msg string) string {
	const limit = 200
	if len(msg) <= limit {
		return msg
	}
	return strings.ToValidUTF8(msg[:limit], "") + "..."
}

// jsonStatus rewrites the mux's own plain-text errors (404 for an unknown
// path, 405 for a wrong method) into the API's JSON error form.
func jsonStatus(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&statusWriter{ResponseWriter: w, r: r}, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	r          *http.Request
	swallowing bool
}

func (sw *statusWriter) WriteHeader(code int) {
	plain := strings.HasPrefix(sw.Header().Get("Content-Type"), "text/plain")
	if plain && (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) {
		sw.swallowing = true
		sw.Header().Del("X-Content-Type-Options")
		if code == http.StatusNotFound {
			writeError(sw.ResponseWriter, code, "not_found", "no such endpoint: "+sw.r.URL.Path)
		} else {
			writeError(sw.ResponseWriter, code, "method_not_allowed",
				fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", sw.r.Method, sw.r.URL.Path, sw.Header().Get("Allow")))
		}
		return
	}
	sw.ResponseWriter.WriteHeader(code)
}

func (sw *statusWriter) Write(b []byte) (int, error) {
	if sw.swallowing {
		return len(b), nil
	}
	return sw.ResponseWriter.Write(b)
}
