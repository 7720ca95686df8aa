package server

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/quantity"
	"github.com/serverlessd/serverlessd/store"
)

type computeInput struct {
	Config *struct {
		Image     string          `json:"image"`
		Resources store.Resources `json:"resources"`
		Storage   string          `json:"storage"`
	} `json:"config"`
}

// spec checks the input against the API's limits before anything is
// created: a compute that could never start must be a 400, not a failed
// compute. Empty fields take the manager's defaults.
func (in computeInput) spec(l resourceLimits) (store.ComputeSpec, error) {
	var spec store.ComputeSpec
	if in.Config == nil {
		return spec, nil
	}
	if err := checkLen("image", in.Config.Image, maxImageLen); err != nil {
		return spec, err
	}
	if img := in.Config.Image; img != "" && len(l.images) > 0 && !slices.Contains(l.images, img) {
		return spec, invalid("image %q is not allowed: use one of %s (the daemon's kubernetes.allowed_images)",
			clip(img), strings.Join(l.images, ", "))
	}
	for _, f := range []struct {
		name, v string
		r       quantity.Range
	}{
		{"cpu", in.Config.Resources.CPU, l.cpu},
		{"memory", in.Config.Resources.Memory, l.memory},
		{"storage", in.Config.Storage, l.storage},
	} {
		if err := checkQuantity(f.name, f.v, f.r); err != nil {
			return spec, err
		}
	}
	spec.Image, spec.Resources, spec.Storage = in.Config.Image, in.Config.Resources, in.Config.Storage
	return spec, nil
}

// checkQuantity checks an optional quantity field against its range.
func checkQuantity(field, v string, r quantity.Range) error {
	if v == "" {
		return nil
	}
	if _, err := r.Check(field, v); err != nil {
		return invalid("%v", err)
	}
	return nil
}

func (s *Server) createCompute(w http.ResponseWriter, r *http.Request) {
	var in computeInput
	if err := decode(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	spec, err := in.spec(s.limits)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := s.project(r)
	if err == nil {
		err = s.applyComputeQuotas(r, p, &spec)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c, op, err := s.mgr.Create(r.Context(), p.ID, spec)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"compute": c, "operation": op})
}

// computeOf loads {cid} and checks it belongs to project {id}.
func (s *Server) computeOf(r *http.Request) (*store.Compute, error) {
	p, err := s.project(r)
	if err != nil {
		return nil, err
	}
	c, err := s.st.GetCompute(r.Context(), r.PathValue("cid"))
	if err != nil {
		return nil, err
	}
	if c.ProjectID != p.ID {
		return nil, fmt.Errorf("compute %s in project %s: %w", r.PathValue("cid"), p.Name, store.ErrNotFound)
	}
	return c, nil
}

func (s *Server) getProjectCompute(w http.ResponseWriter, r *http.Request) {
	p, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := s.st.GetComputeByProject(r.Context(), p.ID)
	if err != nil {
		s.fail(w, r, fmt.Errorf("project %s: %w", p.Name, compute.ErrNoCompute))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"compute": c})
}

func (s *Server) getCompute(w http.ResponseWriter, r *http.Request) {
	c, err := s.computeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"compute": c})
}

func (s *Server) suspendCompute(w http.ResponseWriter, r *http.Request) {
	c, err := s.computeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c, op, err := s.mgr.Suspend(r.Context(), c.ID, compute.ReasonAPI)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"compute": c, "operation": op})
}

func (s *Server) resumeCompute(w http.ResponseWriter, r *http.Request) {
	c, err := s.computeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c, err = s.mgr.Resume(r.Context(), c.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"compute": c, "operation": s.lastOp(r, c)})
}

// lastOp returns the compute's most recent operation (the one an action just
// ran), or nil if there is none.
func (s *Server) lastOp(r *http.Request, c *store.Compute) *store.Operation {
	ops, err := s.st.ListOperations(r.Context(), c.ProjectID, 1)
	if err != nil || len(ops) == 0 || ops[0].ComputeID != c.ID {
		return nil
	}
	return &ops[0]
}

func (s *Server) destroyCompute(w http.ResponseWriter, r *http.Request) {
	c, err := s.computeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	op, err := s.mgr.Destroy(r.Context(), c.ID, compute.ReasonAPI)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c.State, c.Address = "destroyed", ""
	writeJSON(w, http.StatusOK, map[string]any{"compute": c, "operation": op})
}

// wakeCompute is the seed's contract for proxies: wake a project's compute
// and say where it listens.
func (s *Server) wakeCompute(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("endpointish")
	if key == "" {
		s.fail(w, r, invalid("the endpointish query parameter (a project id or name) is required"))
		return
	}
	p, err := s.projectFor(r, key)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.mgr.Wake(r.Context(), p.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) listOperations(w http.ResponseWriter, r *http.Request) {
	p, err := s.project(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			s.fail(w, r, invalid("limit must be a number from 1 to 1000, got %q", v))
			return
		}
	}
	ops, err := s.st.ListOperations(r.Context(), p.ID, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeList(w, "operations", ops)
}

func splitHostPort(addr string) (string, string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, "3306"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return host, port
}
