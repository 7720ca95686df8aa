package server_test

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/serverlessd/serverlessd/server/servertest"
)

// BenchmarkListProjects lists 1000 projects with their computes' status,
// as the console's projects page does every 2 s.
func BenchmarkListProjects(b *testing.B) {
	srv, _ := servertest.New(b, servertest.Options{})
	for i := range 1000 {
		resp, err := srv.Client().Post(srv.URL+"/api/v1/projects", "application/json", strings.NewReader(fmt.Sprintf(`{"name":"p%04d"}`, i)))
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			b.Fatalf("create p%04d: %d", i, resp.StatusCode)
		}
	}
	var size int64
	for b.Loop() {
		resp, err := srv.Client().Get(srv.URL + "/api/v1/projects?include=compute&limit=1000")
		if err != nil {
			b.Fatal(err)
		}
		size, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("list: %d", resp.StatusCode)
		}
	}
	b.ReportMetric(float64(size), "bytes/reply")
}
