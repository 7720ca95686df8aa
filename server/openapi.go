package server

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is the OpenAPI 3.1 description of every route New registers.
// The tests check both ways that the two agree, and that every reply of
// the test suite matches it.
//
//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the API's OpenAPI 3.1 document, as served at
// GET /api/v1/openapi.json. The caller must not change it.
func OpenAPI() []byte { return openAPIDoc }

// serveOpenAPI serves the document: public, like the docs it is.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDoc)
}
