package proxy

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestKillOtherRole: KILL QUERY <our id> of a session logged in as another
// role of the same project is run by the daemon (tenant roles may kill only
// their own threads).
func TestKillOtherRole(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	victim, err := openDB(t, e.dsn("shop.v", "pw2", "", "")).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	var thread uint32
	if err := victim.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&thread); err != nil {
		t.Fatal(err)
	}
	ourID := e.connIDOf(thread)
	done := make(chan error, 1)
	go func() {
		var v int
		done <- victim.QueryRowContext(ctx, "SELECT SLEEP(30)").Scan(&v)
	}()
	waitFor(t, 5*time.Second, func() bool { return backendRunning(t, e.db, "SELECT SLEEP(30)") })
	killer := openDB(t, e.dsn("shop.u", "pw", "", ""))
	if _, err := killer.Exec(fmt.Sprintf("KILL QUERY %d", ourID)); err != nil {
		t.Fatalf("KILL QUERY of another role's session: %v", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the other role's query was not stopped")
	}
	if n := e.waker.kills.Load(); n != 1 {
		t.Fatalf("the daemon ran %d kills, want 1", n)
	}
	// The killer's session goes on.
	if err := killer.Ping(); err != nil {
		t.Fatal(err)
	}
}
