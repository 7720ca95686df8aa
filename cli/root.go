// Package cli holds serverlessd's cobra commands: serve, version, and the
// client commands that drive a running daemon over its HTTP API.
package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X .../cli.Version=...".
var Version = "dev"

// globals are the flags every command shares.
type globals struct {
	configPath string
	api        string
	token      string
	output     string
}

// Execute runs the command line and exits non-zero on error.
func Execute() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "serverlessd",
		Short:         "Serverless MariaDB in one binary",
		Long:          "serverlessd runs MariaDB databases that suspend when nobody uses them and wake when a client connects.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "config file (YAML)")
	pf.StringVar(&g.api, "api", "", "API URL for client commands (default from $SERVERLESSD_API or the config's api.listen)")
	pf.StringVar(&g.token, "token", "", "API bearer token (default $SERVERLESSD_TOKEN or the config's first api.tokens)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format for client commands and version: table or json")
	completeFlags(root)
	root.AddCommand(
		newServe(g),
		newVersion(g),
		newProject(g),
		newCompute(g),
		newRole(g),
		newOperations(g),
		newUsage(g),
		newTenant(g),
		newAPIKey(g),
		newBackup(g),
		newBranch(g),
		newAgent(),
	)
	return root
}

// completeFlags tells shell completion (cobra's completion command) what
// the shared flags take: a YAML file, or one of a few words.
func completeFlags(root *cobra.Command) {
	mustComplete(root.MarkPersistentFlagFilename("config", "yaml", "yml"))
	mustComplete(root.RegisterFlagCompletionFunc("output",
		cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp)))
}

// mustComplete panics on an error registering a completion, which only
// a flag name that does not exist causes.
func mustComplete(err error) {
	if err != nil {
		panic(err)
	}
}
