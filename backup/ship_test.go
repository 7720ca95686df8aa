package backup

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
	"github.com/serverlessd/serverlessd/store/sqlite"
)

// deletedComputes lists, as a listing a few seconds old would, a running
// compute that the store no longer has; rotating it fails as the
// manager's rotation does then.
type deletedComputes struct {
	Computes
	mu      sync.Mutex
	rotated int
}

func (d *deletedComputes) RunningComputes(context.Context) ([]compute.Running, error) {
	return []compute.Running{{WakeResult: compute.WakeResult{ComputeID: "cmp_gone", ProjectID: "prj_gone"}}}, nil
}

func (d *deletedComputes) RotateBinlog(_ context.Context, id string, _ compute.BinlogPos) ([]string, compute.BinlogPos, error) {
	d.mu.Lock()
	d.rotated++
	d.mu.Unlock()
	return nil, compute.BinlogPos{}, fmt.Errorf("get compute %s: %w", id, store.ErrNotFound)
}

// syncBuffer is a log sink the service's goroutines write to.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRotateDeletedCompute: a compute deleted after the running computes
// were listed is not a failed backup. Its rotation ends quietly, and the
// service forgets it.
func TestRotateDeletedCompute(t *testing.T) {
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var logs syncBuffer
	cs := &deletedComputes{}
	s := &Service{
		Target:   Dir{Root: t.TempDir()},
		Store:    st,
		DataDir:  func(*store.Compute) (string, bool) { return t.TempDir(), true },
		Computes: cs,
		MaxDelay: 200 * time.Millisecond,
		Log:      slog.New(slog.NewTextHandler(&logs, nil)),
		Metrics:  NewMetrics(),
	}
	s.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cs.mu.Lock()
		n := cs.rotated
		cs.mu.Unlock()
		if n >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Stop()
	if cs.rotated < 3 {
		t.Fatalf("the deleted compute was rotated %d times in 10 s, want 3", cs.rotated)
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("a deleted compute's rotation was logged as a failure:\n%s", logs.String())
	}
	var m dto.Metric
	if err := s.Metrics.failures.Write(&m); err != nil {
		t.Fatal(err)
	}
	if n := m.GetCounter().GetValue(); n != 0 {
		t.Fatalf("%v backup failures counted for a deleted compute, want 0", n)
	}
	if len(s.computes) != 0 {
		t.Fatalf("the service still tracks %d computes, want the deleted one forgotten", len(s.computes))
	}
}
