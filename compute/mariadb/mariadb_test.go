package mariadb

import (
	"strings"
	"testing"
)

func TestParseFreeing(t *testing.T) {
	for _, tc := range []struct {
		q    string
		verb string
	}{
		{"DROP TABLE t", "DROP TABLE"},
		{"drop table if exists app.t, `we``ird`.`x y`;", "DROP TABLE"},
		{"  TRUNCATE app.t ", "TRUNCATE TABLE"},
		{"TRUNCATE TABLE t", "TRUNCATE TABLE"},
		{"DROP DATABASE IF EXISTS app", "DROP DATABASE"},
		{"DROP SCHEMA app", "DROP DATABASE"},
		{"DROP TABLE t; INSERT INTO u VALUES (1)", ""},
		{"DROP TABLE /* c */ t", ""},
		{"DROP TABLE t -- c", ""},
		{"DROP TEMPORARY TABLE t", ""},
		{"DROP TABLE", ""},
		{"DROP TABLE a..b", ""},
		{"DROP DATABASE a, b", ""},
		{"TRUNCATE t, u", ""},
		{"DROP TABLE `unterminated", ""},
		{"DROP TABLE 'quoted'", ""},
		{"INSERT INTO t VALUES (1)", ""},
		{"", ""},
	} {
		f, err := ParseFreeing(tc.q)
		switch {
		case tc.verb == "" && err == nil:
			t.Errorf("%q recognized as %s", tc.q, f.Verb)
		case tc.verb != "" && (err != nil || f.Verb != tc.verb):
			t.Errorf("%q: %v, %v; want %s", tc.q, f, err, tc.verb)
		}
	}
}

func TestSyncStatements(t *testing.T) {
	roles := []Role{{Name: "root", Hash: "*AA"}, {Name: "app", Hash: "*BB"}}
	have := map[string]string{"root": "*aa", "app": "*CC", "gone": "*DD", "serverlessd_x": "*EE"}
	got := strings.Join(SyncStatements(roles, have, func(n string) bool { return !strings.HasPrefix(n, "serverlessd") }), "\n")
	for _, want := range []string{"ALTER USER `app`@`%` IDENTIFIED BY PASSWORD '*BB'", "DROP USER `gone`@`%`"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "root") || strings.Contains(got, "serverlessd_x") {
		t.Errorf("unexpected statements:\n%s", got)
	}
	created := strings.Join(SyncStatements([]Role{{Name: "new", Hash: "*FF"}}, nil, nil), "\n")
	for _, bad := range []string{"CREATE USER ON", "GRANT OPTION", "SUPER", "FILE", "*.* TO `new`@`%` WITH"} {
		if strings.Contains(created, bad) {
			t.Errorf("a new role's grants hold %q:\n%s", bad, created)
		}
	}
}

func TestFixAccount(t *testing.T) {
	old := account{user: "root", host: "%", access: 1<<40 - 1, guarded: 2}
	got := strings.Join(fixAccount(old), "\n")
	if !strings.HasPrefix(got, "REVOKE ALL PRIVILEGES, GRANT OPTION FROM `root`@`%`") || !strings.Contains(got, "ON `%`.* TO `root`@`%`") {
		t.Errorf("an account of an older version is not brought back to the set:\n%s", got)
	}
	if s := fixAccount(account{user: "app", host: "%", access: tenantGlobalBits, guarded: 2}); len(s) != 0 {
		t.Errorf("an account inside the set was changed: %v", s)
	}
	if s := strings.Join(fixAccount(account{user: "r", role: true}), "\n"); !strings.Contains(s, "('', 'mysql', 'r')") {
		t.Errorf("a role without its guard rows: %s", s)
	}
}

func TestInitSQL(t *testing.T) {
	sql := string(InitSQL("localhost", "*0123456789ABCDEF0123456789ABCDEF01234567"))
	if !strings.Contains(sql, "CREATE OR REPLACE USER `serverlessd_admin`@`localhost`") ||
		!strings.Contains(sql, "GRANT ALL PRIVILEGES ON *.* TO `serverlessd_admin`@`localhost` WITH GRANT OPTION;") {
		t.Fatal(sql)
	}
	if got := quoteString(`it's \ here`); got != `'it\'s \\ here'` {
		t.Errorf("quoteString: %s", got)
	}
}
