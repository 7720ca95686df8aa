// Package openapitest checks exchanges with the API against its OpenAPI
// document, server.OpenAPI: a reply the document does not describe fails
// the test that got it.
package openapitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/serverlessd/serverlessd/server"
)

// spec is the loaded, checked document and a router over its operations.
type spec struct {
	doc    *openapi3.T
	router routers.Router
}

// load reads the document once; every check shares it, read-only.
var load = sync.OnceValues(func() (*spec, error) {
	doc, err := openapi3.NewLoader().LoadFromData(server.OpenAPI())
	if err != nil {
		return nil, fmt.Errorf("load the OpenAPI document: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is not valid OpenAPI %s: %w", doc.OpenAPI, err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route the OpenAPI document: %w", err)
	}
	return &spec{doc: doc, router: router}, nil
})

// Document returns the parsed document, checked against the OpenAPI
// specification.
func Document() (*openapi3.T, error) {
	s, err := load()
	if err != nil {
		return nil, err
	}
	return s.doc, nil
}

// Check says why a reply, with status, header and body, to req does not
// conform to the document, or returns nil:
//   - an operation the document has must answer a status it lists, with a
//     content type and a body its schema allows;
//   - a request to an operation it does not have must get the error body
//     with 401 (auth runs first), 404 or 405;
//   - a request the server took (2xx) must conform too: what the server
//     accepts, the document must allow. Other requests are not checked,
//     since tests send bad input on purpose.
//
// req's body is read again through req.GetBody, which http.NewRequest sets
// for the usual readers; req itself is left as it is.
func Check(req *http.Request, status int, header http.Header, body []byte) error {
	s, err := load()
	if err != nil {
		return err
	}
	req, err = rewound(req)
	if err != nil {
		return err
	}
	route, params, err := s.router.FindRoute(req)
	if errors.Is(err, routers.ErrPathNotFound) || errors.Is(err, routers.ErrMethodNotAllowed) {
		return s.checkUndocumented(req, status, header, body)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	ctx := context.Background()
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if status/100 == 2 {
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
			return fmt.Errorf("%s %s got %d, but its request does not match the document: %w", req.Method, req.URL.Path, status, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: opts}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("%s %s: the %d reply does not match the document: %w", req.Method, req.URL.Path, status, err)
	}
	return nil
}

// checkUndocumented checks the reply to a path or method the document
// does not have: the mux's 404 or 405 (or auth's 401, which comes first),
// in the error body.
func (s *spec) checkUndocumented(req *http.Request, status int, header http.Header, body []byte) error {
	if !slices.Contains([]int{http.StatusUnauthorized, http.StatusNotFound, http.StatusMethodNotAllowed}, status) {
		return fmt.Errorf("%s %s is not in the document, yet the server answered %d: document it, or it must be 404 or 405", req.Method, req.URL.Path, status)
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("%s %s: the %d reply is %q, not the JSON error body", req.Method, req.URL.Path, status, ct)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s %s: the %d reply is not JSON: %w", req.Method, req.URL.Path, status, err)
	}
	if err := s.doc.ValidateSchemaJSON(s.doc.Components.Schemas["Error"].Value, v, openapi3.EnableJSONSchema2020()); err != nil {
		return fmt.Errorf("%s %s: the %d reply is not the error body: %w", req.Method, req.URL.Path, status, err)
	}
	return nil
}

// rewound returns a copy of req whose body reads from the start, as JSON:
// the server reads every body as JSON, whatever its Content-Type says.
func rewound(req *http.Request) (*http.Request, error) {
	r := req.Clone(req.Context())
	r.Body = http.NoBody
	if req.GetBody != nil {
		b, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("read the body of %s %s again: %w", req.Method, req.URL.Path, err)
		}
		r.Body = b
	}
	r.Header.Set("Content-Type", "application/json")
	return r, nil
}

// CheckResponse is Check for a reply read whole into body; resp.Body is
// left as it is.
func CheckResponse(resp *http.Response, body []byte) error {
	return Check(resp.Request, resp.StatusCode, resp.Header, body)
}
