// Package console is serverlessd's web console: plain HTML, CSS and
// JavaScript embedded in the binary, served by the API listener. The pages
// call the HTTP API from the browser with the key the user signs in with,
// so the console can do exactly what that key may do, and nothing else.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
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
}

// assets are the files the page links to by a versioned URL
// (/console/app.js?v=<hash>): a browser keeps them until the binary
// changes, and asks only for the small page again.
var assets = []string{"app.js", "style.css"}

// Routes returns the console's handlers by pattern: the page at / and its
// assets under /console/. They need no key: the key is the browser's.
func Routes() map[string]http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	index, versions := versioned(sub)
	files := http.StripPrefix("/console/", http.FileServerFS(sub))
	return map[string]http.Handler{
		"GET /{$}": withHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
			_, _ = w.Write(index)
		})),
		"GET /console/": withHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if v := r.URL.Query().Get("v"); v != "" && v == versions[r.URL.Path[len("/console/"):]] {
				w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
			} else {
				w.Header().Set("Cache-Control", "no-cache")
			}
			files.ServeHTTP(w, r)
		})),
	}
}

// versioned returns index.html with its assets' URLs carrying a hash of
// their content, and the hashes by file.
func versioned(sub fs.FS) ([]byte, map[string]string) {
	index, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		panic(err)
	}
	versions := map[string]string{}
	for _, name := range assets {
		b, err := fs.ReadFile(sub, name)
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		versions[name] = hex.EncodeToString(sum[:6])
		url := []byte("/console/" + name)
		index = bytes.ReplaceAll(index, append(append([]byte(`"`), url...), '"'),
			[]byte(`"/console/`+name+`?v=`+versions[name]+`"`))
	}
	return index, versions
}

func withHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		h.ServeHTTP(w, r)
	})
}
