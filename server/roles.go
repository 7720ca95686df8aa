package server

import (
	"net/http"
)

type createRoleInput struct {
	Name string `json:"name"`
}

func (s *Server) createRole(w http.ResponseWriter, r *http.Request) {
	var in createRoleInput
	if err := decode(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if len(in.Name) > maxRoleNameLen {
		s.fail(w, r, invalid("name must be at most %d characters (from a-z, A-Z, 0-9, _ and -), got %d", maxRoleNameLen, len(in.Name)))
		return
	}
	p, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	role, pw, err := s.mgr.CreateRole(r.Context(), p.ID, in.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"role": role, "credentials": s.credentials(p, role.Name, pw)})
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request) {
	p, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	roles, err := s.st.ListRoles(r.Context(), p.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeList(w, "roles", roles)
}

func (s *Server) resetPassword(w http.ResponseWriter, r *http.Request) {
	p, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	role, pw, err := s.mgr.ResetPassword(r.Context(), p.ID, r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"role": role, "credentials": s.credentials(p, role.Name, pw)})
}

func (s *Server) deleteRole(w http.ResponseWriter, r *http.Request) {
	p, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.mgr.DeleteRole(r.Context(), p.ID, r.PathValue("name")); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": true})
}
