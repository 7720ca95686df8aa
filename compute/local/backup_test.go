package local

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/serverlessd/serverlessd/backup"
)

// TestSnapshotOfAStoppedCompute snapshots a real compute's folder after a
// clean stop, deletes the folder, restores it, and starts mariadbd on it:
// every committed row is there.
func TestSnapshotOfAStoppedCompute(t *testing.T) {
	d, _ := newDriver(t, Options{})
	c := newCompute(t, d, "128Mi")
	db := adminDB(t, d, c, start(t, d, c))
	mustExec(t, db, "CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(100))",
		"INSERT INTO shop.t SELECT seq, REPEAT('x', 100) FROM shop.seq_1_to_5000")
	db.Close()
	stop(t, d, c)

	root := filepath.Join(d.opts.Dir, c.ID)
	tgt := backup.Dir{Root: t.TempDir()}
	m, st, err := backup.Snapshot(ctx(t), tgt, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot: %d files, %d bytes read, %d stored", st.Files, st.BytesRead, st.BytesStored)
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	if err := backup.Restore(ctx(t), tgt, m, root); err != nil {
		t.Fatal(err)
	}
	db = adminDB(t, d, c, start(t, d, c))
	if n := queryInt(t, db, "SELECT COUNT(*) FROM shop.t"); n != 5000 {
		t.Fatalf("restored compute has %d rows, want 5000", n)
	}
	db.Close()
	stop(t, d, c)

	// Nothing changed since: a second snapshot reads nothing again.
	if _, st, err = backup.Snapshot(ctx(t), tgt, root, m); err != nil {
		t.Fatal(err)
	}
	if st.Uploaded > st.Files/2 {
		t.Errorf("second snapshot stored %d of %d files; most did not change", st.Uploaded, st.Files)
	}
}

// BenchmarkSnapshotAfterSuspend measures what a snapshot after a suspend
// costs: a compute of the default size with 5000 rows gets one more row,
// stops cleanly, and its folder is snapshotted against the previous
// snapshot. It reports the bytes read and stored per snapshot.
func BenchmarkSnapshotAfterSuspend(b *testing.B) {
	d, _ := newDriver(b, Options{})
	c := newCompute(b, d, "")
	db := adminDB(b, d, c, start(b, d, c))
	mustExec(b, db, "CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(100))",
		"INSERT INTO shop.t SELECT seq, REPEAT('x', 100) FROM shop.seq_1_to_5000")
	db.Close()
	stop(b, d, c)
	tgt := backup.Dir{Root: b.TempDir()}
	prev, _, err := backup.Snapshot(ctx(b), tgt, d.Folder(c), nil)
	if err != nil {
		b.Fatal(err)
	}
	var read, stored int64
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		db := adminDB(b, d, c, start(b, d, c))
		mustExec(b, db, fmt.Sprintf("INSERT INTO shop.t VALUES (%d, 'new')", 10000+i))
		db.Close()
		stop(b, d, c)
		b.StartTimer()
		m, st, err := backup.Snapshot(ctx(b), tgt, d.Folder(c), prev)
		if err != nil {
			b.Fatal(err)
		}
		prev, read, stored = m, read+st.BytesRead, stored+st.BytesStored
	}
	b.ReportMetric(float64(read)/float64(b.N)/(1<<20), "MiB-read/op")
	b.ReportMetric(float64(stored)/float64(b.N)/(1<<20), "MiB-stored/op")
}
