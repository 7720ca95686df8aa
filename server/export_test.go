package server

import "slices"

// Patterns returns the ServeMux pattern of every route s serves, in the
// order New registered them.
func (s *Server) Patterns() []string { return slices.Clone(s.patterns) }
