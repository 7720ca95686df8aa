package sqldb

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestRebind(t *testing.T) {
	tests := []struct {
		numbered bool
		in, want string
	}{
		{false, "a = ? AND b = ?", "a = ? AND b = ?"},
		{true, "a = ? AND b = ?", "a = $1 AND b = $2"},
		{true, "no params", "no params"},
	}
	for _, tc := range tests {
		if got := (Dialect{NumberedParams: tc.numbered}).rebind(tc.in); got != tc.want {
			t.Errorf("rebind(%q, numbered %v) = %q, want %q", tc.in, tc.numbered, got, tc.want)
		}
	}
}

// TestMigrationsOverlay checks that a dialect's files replace shared
// versions and add their own.
func TestMigrationsOverlay(t *testing.T) {
	shared, err := Migrations(Dialect{Name: "plain"})
	if err != nil {
		t.Fatalf("shared migrations: %v", err)
	}
	if len(shared) == 0 || shared[0].Version != 1 || !strings.Contains(shared[0].SQL, "CREATE TABLE projects") {
		t.Fatalf("shared migrations = %+v, want 0001_init first", shared)
	}

	own := fstest.MapFS{
		"0001_init_pg.sql": {Data: []byte("-- replaced")},
		"9000_only_pg.sql": {Data: []byte("-- added")},
		"README.md":        {Data: []byte("ignored")},
	}
	got, err := Migrations(Dialect{Name: "pg", Migrations: own})
	if err != nil {
		t.Fatalf("Migrations: %v", err)
	}
	if len(got) != len(shared)+1 {
		t.Fatalf("got %d migrations, want %d", len(got), len(shared)+1)
	}
	if got[0].Name != "0001_init_pg.sql" || got[0].SQL != "-- replaced" {
		t.Errorf("version 1 = %s, want the dialect's file", got[0].Name)
	}
	if last := got[len(got)-1]; last.Version != 9000 {
		t.Errorf("last migration = %d, want the dialect-only 9000", last.Version)
	}
}

func TestMigrationsBadFiles(t *testing.T) {
	tests := map[string]fstest.MapFS{
		"bad name":          {"init.sql": {}},
		"upper case":        {"0002_Add.sql": {}},
		"duplicate version": {"0002_a.sql": {}, "02_b.sql": {}},
	}
	for name, fsys := range tests {
		if _, err := Migrations(Dialect{Name: "x", Migrations: fsys}); err == nil {
			t.Errorf("%s: Migrations accepted %v", name, fsys)
		}
	}
}
