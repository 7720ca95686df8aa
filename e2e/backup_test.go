package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSnapshotAfterSuspend turns backups on: a suspend through the API
// leaves the compute's snapshot in <data_dir>/backups.
func TestSnapshotAfterSuspend(t *testing.T) {
	d := startDaemon(t, "", "SERVERLESSD_BACKUP_ENABLED=true")
	var p projectOut
	if st := d.postJSON(t, "/api/v1/projects", `{"name":"snap"}`, &p); st != 201 {
		t.Fatalf("create project: %d", st)
	}
	var c computeOut
	if st := d.postJSON(t, "/api/v1/projects/snap/compute", `{"config":{"resources":{"memory":"128Mi"}}}`, &c); st != 201 {
		t.Fatalf("create compute: %d", st)
	}
	if o, err := d.mariadb(t, p.Role.MySQLUser, p.Role.Password, "-e", "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t VALUES (1)"); err != nil {
		t.Fatalf("write: %v %s", err, o)
	}
	if st := d.postJSON(t, "/api/v1/projects/snap/compute/"+c.Compute.ID+"/suspend", "", &c); st != 200 {
		t.Fatalf("suspend: %d", st)
	}
	latest := filepath.Join(d.dataDir, "backups", "snapshots", p.Project.ID, c.Compute.ID, "latest.json")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(latest); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot at %s 30 s after the suspend; daemon log:\n%s", latest, d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
