// Package console is serverlessd's web console: plain HTML, CSS and
// JavaScript embedded in the binary, served by the API listener. The pages
// call the HTTP API from the browser with the key the user signs in with,
// so the console can do exactly what that key may do, and nothing else.
package console

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// securityHeaders keep the pages from running anything but their own
// scripts (no inline script, no other origin) and from being framed.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options": "nosniff",
	"X-Frame-Options":        "DENY",
	"Referrer-Policy":        "no-referrer",
	// The assets change with the binary; a browser asks again each time.
	"Cache-Control": "no-cache",
}

// Routes returns the console's handlers by pattern: the page at / and its
// assets under /console/. They need no key: the key is the browser's.
func Routes() map[string]http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	files := http.StripPrefix("/console/", http.FileServerFS(sub))
	index := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, sub, "index.html")
	})
	return map[string]http.Handler{
		"GET /{$}":      withHeaders(index),
		"GET /console/": withHeaders(files),
	}
}

func withHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		h.ServeHTTP(w, r)
	})
}
