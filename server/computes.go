package server

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// quantity is a Kubernetes resource quantity such as 500m, 1Gi or 2.
var quantity = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$`)

type computeInput struct {
	Config *struct {
		Image     string          `json:"image"`
		Resources store.Resources `json:"resources"`
		Storage   string          `json:"storage"`
	} `json:"config"`
}

func (in computeInput) spec() (store.ComputeSpec, error) {
	var spec store.ComputeSpec
	if in.Config == nil {
		return spec, nil
	}
	for name, v := range map[string]string{"cpu": in.Config.Resources.CPU, "memory": in.Config.Resources.Memory, "storage": in.Config.Storage} {
		if v != "" && !quantity.MatchString(v) {
			return spec, invalid("%s must be a quantity like 500m, 1Gi or 2, got %q", name, v)
		}
	}
	if len(in.Config.Image) > 255 {
		return spec, invalid("image must be at most 255 characters")
	}
	spec.Image, spec.Resources, spec.Storage = in.Config.Image, in.Config.Resources, in.Config.Storage
	return spec, nil
}

func (s *Server) createCompute(w http.ResponseWriter, r *http.Request) {
	var in computeInput
	if err := decode(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	spec, err := in.spec()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := s.project(r)
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
	p, err := s.st.GetProject(r.Context(), key)
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
	if ops == nil {
		ops = []store.Operation{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"operations": ops})
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
