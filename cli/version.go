package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// buildInfo is what `serverlessd version` reports.
type buildInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	Time      string `json:"time,omitempty"` // the commit's, not the build's
	Modified  bool   `json:"modified"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
}

func newVersion(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print serverlessd's version, source revision and Go version",
		Long: "Print serverlessd's version, the source revision it was built from (and whether that tree had " +
			"uncommitted changes), the Go version and the platform. -o json prints them as JSON.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi, ok := debug.ReadBuildInfo()
			return printVersion(cmd.OutOrStdout(), readBuildInfo(bi, ok), g.output)
		},
	}
}

// readBuildInfo takes the version set at link time (the Makefile's and
// the Dockerfile's -X), else the module's when built with go install
// module@version, and the VCS stamps the go command adds when it builds
// from a repository (absent with -buildvcs=false or without .git).
func readBuildInfo(bi *debug.BuildInfo, ok bool) buildInfo {
	info := buildInfo{Version: Version, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if !ok {
		return info
	}
	if v := bi.Main.Version; info.Version == "dev" && v != "" && v != "(devel)" {
		info.Version = v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// printVersion writes info as text (its first line "serverlessd VERSION",
// as it always was) or as JSON.
func printVersion(w io.Writer, info buildInfo, output string) error {
	switch output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	case "table", "":
	default:
		return fmt.Errorf("--output must be table or json, got %q", output)
	}
	rev, when := info.Revision, info.Time
	if rev == "" {
		rev = "unknown (built without VCS stamps)"
	} else if info.Modified {
		rev += " (modified: uncommitted changes)"
	}
	if when == "" {
		when = "unknown"
	}
	_, err := fmt.Fprintf(w, "serverlessd %s\nrevision:    %s\ncommit time: %s\ngo:          %s\nplatform:    %s/%s\n",
		info.Version, rev, when, info.GoVersion, info.OS, info.Arch)
	return err
}
