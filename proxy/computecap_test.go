package proxy

import (
	"context"
	"testing"
)

// TestComputeClientCap: past the client connections its compute takes
// (WakeResult.MaxClients), a login is refused with 1040 before any backend
// login, so the compute always has room for its daemon; a closed session
// frees its place.
func TestComputeClientCap(t *testing.T) {
	e := newEnv(t, nil)
	e.waker.clients = 2
	ctx := context.Background()
	db := openDB(t, e.dsn("shop.u", "pw", "", ""))
	db.SetMaxIdleConns(0) // a closed Conn closes its connection
	c1, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := db.Conn(ctx); mysqlErrNumber(err) != 1040 {
		t.Fatalf("third connection: %v, want 1040", err)
	}
	c1.Close()
	waitFor(t, 5e9, func() bool { return e.srv.projects.count("p-shop") < 2 })
	c3, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("after a close: %v", err)
	}
	c3.Close()
}
