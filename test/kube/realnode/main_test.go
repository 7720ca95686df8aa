//go:build linux && realnode

package realnode

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// shared is the run's cluster: the first test that needs it brings it up
// (so that -run of one test costs one bring-up, and a skip none), TestMain
// tears it down after the last.
var shared struct {
	once sync.Once
	env  *env
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.env != nil {
		if err := shared.env.teardown(code != 0 || shared.err != nil); err != nil {
			fmt.Fprintln(os.Stderr, "realnode:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startEnv returns the running cluster, bringing it up on first use.
func startEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a real node needs root")
	}
	shared.once.Do(func() { shared.env, shared.err = bringUp(t.Logf) })
	if shared.err != nil {
		t.Fatalf("bring-up: %v", shared.err)
	}
	return shared.env
}
