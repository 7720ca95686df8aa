package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// principal is who a request acts for: an admin (a token of the config, an
// admin-scoped key, or anyone when no token is configured), or a tenant- or
// project-scoped API key.
type principal struct {
	admin     bool
	tenantID  string // of a scoped key
	projectID string // of a project-scoped key
	readOnly  bool
}

type principalKey struct{}

// who returns the request's principal; auth always sets one.
func who(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

// keyPrefix starts every API key, so that a key is recognisable in a
// secret scanner and told apart from a config token at a glance.
const keyPrefix = "sdk_"

// newAPIKey returns a new key and the hash the store keeps of it.
func newAPIKey() (key, hash string) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // cannot happen on Linux
	}
	key = keyPrefix + hex.EncodeToString(b)
	return key, hashKey(key)
}

// hashKey is the stored form of a key. Keys are 192 random bits, so a
// plain SHA-256 cannot be reversed by guessing, and a lookup by it costs
// one index probe.
func hashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// touchEvery bounds how often a key's last use is written: at most once a
// minute per key, so that a busy client does not write on every request.
const touchEvery = time.Minute

// auth finds the request's principal from its bearer token, refuses a
// missing, unknown, revoked or expired one with 401, and a write with a
// read-only key with 403.
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		if p.readOnly && r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, http.StatusForbidden, "forbidden", "this API key is read-only; use a read-write key to change anything")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// metrics serves m.Full to admins and m.Public to anyone else, a scraper
// without a token included; a token that is given must be valid.
func (s *Server) metrics(m Metrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" && len(s.tokens) > 0 {
			m.Public.ServeHTTP(w, r)
			return
		}
		p, ok := s.authenticate(w, r)
		switch {
		case !ok:
		case p.admin:
			m.Full.ServeHTTP(w, r)
		default:
			m.Public.ServeHTTP(w, r)
		}
	})
}

// authenticate resolves the bearer token; on false it has written the reply.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (principal, bool) {
	got, hasBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !hasBearer && len(s.tokens) == 0 {
		return principal{admin: true}, true // no auth configured: loopback only
	}
	if hasBearer && s.validToken([]byte(got)) {
		return principal{admin: true}, true
	}
	if hasBearer && strings.HasPrefix(got, keyPrefix) {
		k, err := s.st.GetAPIKeyByHash(r.Context(), hashKey(got))
		switch {
		case err == nil && !k.ExpiresAt.IsZero() && !time.Now().Before(k.ExpiresAt):
			unauthorized(w, "this API key expired at "+k.ExpiresAt.Format(time.RFC3339)+"; ask for a new one")
			return principal{}, false
		case err == nil:
			s.touchKey(r.Context(), k)
			return principal{admin: k.Scope == store.ScopeAdmin, tenantID: k.TenantID, projectID: k.ProjectID, readOnly: k.ReadOnly}, true
		case !errors.Is(err, store.ErrNotFound):
			s.fail(w, r, err)
			return principal{}, false
		}
	}
	unauthorized(w, "a valid bearer token or API key is required (Authorization: Bearer <token>)")
	return principal{}, false
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="serverlessd"`)
	writeError(w, http.StatusUnauthorized, "unauthorized", msg)
}

// touchKey records the key's use when the stored time is stale. A failure
// only loses the time, never the request.
func (s *Server) touchKey(ctx context.Context, k *store.APIKey) {
	now := store.Now()
	if now.Sub(k.LastUsedAt) < touchEvery {
		return
	}
	if err := s.st.TouchAPIKey(ctx, k.ID, now); err != nil {
		s.log.Warn("cannot record an API key's use", "key", k.ID, "err", err)
	}
}

func (s *Server) validToken(got []byte) bool {
	ok := false
	for _, t := range s.tokens {
		// Compare against every token in constant time so timing reveals nothing.
		if subtle.ConstantTimeCompare(got, t) == 1 {
			ok = true
		}
	}
	return ok
}

// seesTenant reports whether the principal may see a tenant.
func (p principal) seesTenant(tenantID string) bool {
	return p.admin || p.tenantID == tenantID
}

// sees reports whether the principal may see a project.
func (p principal) sees(pr *store.Project) bool {
	switch {
	case p.admin:
		return true
	case p.projectID != "":
		return p.projectID == pr.ID
	}
	return p.tenantID == pr.TenantID
}

// project loads the {id} path value, an id or a name, as the principal may
// see it: another tenant's project is not found, as a missing one would be,
// so that its name is not disclosed. Admins find any project by id, and the
// default tenant's by name.
func (s *Server) project(r *http.Request) (*store.Project, error) {
	return s.projectFor(r, r.PathValue("id"))
}

func (s *Server) projectFor(r *http.Request, idOrName string) (*store.Project, error) {
	p := who(r)
	if p.admin {
		return s.st.GetProject(r.Context(), idOrName)
	}
	pr, err := s.st.GetTenantProject(r.Context(), p.tenantID, idOrName)
	if err != nil {
		return nil, err
	}
	if !p.sees(pr) {
		return nil, notFound("project %q", idOrName)
	}
	return pr, nil
}

// notFound is a store.ErrNotFound for what a principal may not see: the
// same answer as for what does not exist.
func notFound(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), store.ErrNotFound)
}

// forbidden is a 403: the principal's scope does not allow the action.
type forbidden struct{ msg string }

func (e forbidden) Error() string { return e.msg }
