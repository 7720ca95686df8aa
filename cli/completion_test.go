package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletion generates each shell's script through cobra's default
// completion command, checks bash's (and zsh's and fish's, where they are
// installed) with the shell's own syntax check, and asks the hidden
// __complete command for commands, flags and flag values.
func TestCompletion(t *testing.T) {
	help, err := runCLI(t, "--help")
	if err != nil || !strings.Contains(help, "completion") {
		t.Errorf("--help does not list the completion command (err %v):\n%s", err, help)
	}
	syntax := map[string][]string{"bash": {"bash", "-n"}, "zsh": {"zsh", "-n"}, "fish": {"fish", "--no-execute"}}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		script, err := runCLI(t, "completion", shell)
		if err != nil {
			t.Fatalf("completion %s: %v", shell, err)
		}
		if !strings.Contains(script, "serverlessd") || !strings.Contains(script, "__complete") {
			t.Errorf("completion %s: the script does not name serverlessd and its __complete:\n%.300s", shell, script)
		}
		check := syntax[shell]
		if check == nil {
			continue
		}
		if _, err := exec.LookPath(check[0]); err != nil {
			if shell == "bash" {
				t.Errorf("bash is not installed: the bash script cannot be checked")
			}
			continue
		}
		file := filepath.Join(t.TempDir(), "serverlessd."+shell)
		if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(check[0], append(check[1:], file)...).CombinedOutput(); err != nil {
			t.Errorf("completion %s: %s finds the script invalid: %v\n%s", shell, strings.Join(check, " "), err, out)
		}
	}
	for args, want := range map[string][]string{
		"__complete|":                        {"serve", "version", "completion", "project"},
		"__complete|serve|--":                {"--data-dir", "--api-listen", "--proxy-listen", "--log-level", "--config"},
		"__complete|serve|--log-level|":      {"debug", "info", "warn", "error"},
		"__complete|version|-o|":             {"table", "json"},
		"__complete|project|list|--output|j": {"json"},
		"__complete|completion|":             {"bash", "zsh", "fish", "powershell"},
	} {
		out, err := runCLI(t, strings.Split(args, "|")...)
		if err != nil {
			t.Errorf("%s: %v", args, err)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("serverlessd %s offered %q, without %s", strings.ReplaceAll(args, "|", " "), out, w)
			}
		}
	}
}
