package cli

import (
	"bytes"
	"encoding/json"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// runCLI runs one command line in-process and returns its stdout.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := runCLI(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"serverlessd " + Version + "\n", "revision:", "commit time:",
		"go:          " + runtime.Version(), "platform:    " + runtime.GOOS + "/" + runtime.GOARCH} {
		if !strings.Contains(out, want) {
			t.Errorf("version printed %q, without %q", out, want)
		}
	}
	out, err = runCLI(t, "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got buildInfo
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("version -o json printed %q: %v", out, err)
	}
	if got.Version != Version || got.GoVersion != runtime.Version() || got.OS != runtime.GOOS || got.Arch != runtime.GOARCH {
		t.Errorf("version -o json = %+v", got)
	}
	if _, err := runCLI(t, "version", "-o", "yaml"); err == nil || !strings.Contains(err.Error(), "table or json") {
		t.Errorf("version -o yaml: err = %v, want one naming table and json", err)
	}
}

// TestReadBuildInfo reads the VCS stamps and prefers the link-time
// version to the module's, which is used only when none was set.
func TestReadBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	defer func(v string) { Version = v }(Version)
	Version = "dev"
	got := readBuildInfo(bi, true)
	want := buildInfo{Version: "v1.2.3", Revision: "0123456789abcdef0123456789abcdef01234567",
		Time: "2026-01-02T03:04:05Z", Modified: true, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if got != want {
		t.Errorf("readBuildInfo = %+v, want %+v", got, want)
	}
	var out bytes.Buffer
	if err := printVersion(&out, got, "table"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "revision:    0123456789abcdef0123456789abcdef01234567 (modified: uncommitted changes)") {
		t.Errorf("printed %q", out.String())
	}
	Version = "v9.9.9-3-gabcdef"
	if got := readBuildInfo(bi, true).Version; got != Version {
		t.Errorf("version %q, want the link-time %q", got, Version)
	}
	Version = "dev"
	bi.Main.Version = "(devel)"
	if got := readBuildInfo(bi, true).Version; got != "dev" {
		t.Errorf("version %q of a (devel) build, want dev", got)
	}
	if got := readBuildInfo(nil, false); got.Version != "dev" || got.Revision != "" || got.GoVersion == "" {
		t.Errorf("without build info: %+v", got)
	}
}
