package mariadb

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// Execer runs SQL on a compute as the daemon's account. go-mysql's
// *client.Conn is one.
type Execer interface {
	Execute(command string, args ...any) (*mysql.Result, error)
}

// Role is a tenant role as the store has it: the name (user name at host
// '%') and its mysql_native_password hash.
type Role struct {
	Name string
	Hash string
}

// OwnerRole is the role every project gets at creation.
const OwnerRole = "root"

// usersSQL reads the tenant's accounts from mysql.global_priv, not from
// the mysql.user view, whose definer (mariadb.sys) a tenant must never be
// able to break the daemon with.
const usersSQL = `SELECT User, IFNULL(JSON_VALUE(Priv, '$.authentication_string'), '')
FROM mysql.global_priv WHERE Host = '%'`

// Users lists the compute's accounts at host '%' (the tenant's users) with
// their password hashes.
func Users(db Execer) (map[string]string, error) {
	res, err := db.Execute(usersSQL)
	if err != nil {
		return nil, fmt.Errorf("list the compute's users: %w", err)
	}
	defer res.Close()
	have := map[string]string{}
	for i := range res.RowNumber() {
		name, _ := res.GetString(i, 0)
		hash, _ := res.GetString(i, 1)
		have[name] = hash
	}
	return have, nil
}

// SyncStatements returns the SQL that turns the compute's '%' users (have:
// name -> hash) into the store's roles: missing ones are created with the
// tenant privilege set, changed hashes are altered, and users the store
// does not know are dropped when keep says they are tenant roles (not the
// daemon's or MariaDB's own accounts).
func SyncStatements(roles []Role, have map[string]string, keep func(name string) bool) []string {
	var stmts []string
	want := map[string]bool{}
	flush := false
	for _, r := range roles {
		want[r.Name] = true
		acct := Account(r.Name, "%")
		hash, ok := have[r.Name]
		switch {
		case !ok:
			stmts = append(stmts, fmt.Sprintf("CREATE USER %s IDENTIFIED BY PASSWORD %s", acct, quoteString(r.Hash)))
			stmts = append(stmts, TenantGrants(r.Name, "%")...)
			flush = true
		case !strings.EqualFold(hash, r.Hash):
			stmts = append(stmts, fmt.Sprintf("ALTER USER %s IDENTIFIED BY PASSWORD %s", acct, quoteString(r.Hash)))
		}
	}
	for name := range have {
		if !want[name] && keep(name) {
			stmts = append(stmts, fmt.Sprintf("DROP USER %s", Account(name, "%")))
		}
	}
	if flush {
		stmts = append(stmts, "FLUSH PRIVILEGES") // loads the guard rows
	}
	return stmts
}

// NativeHash matches a mysql_native_password hash as mysql.user stores it.
var NativeHash = regexp.MustCompile(`^\*[0-9A-F]{40}$`)

// HashPassword returns a password's mysql_native_password hash, as
// PASSWORD() makes it: "*" + HEX(SHA1(SHA1(password))).
func HashPassword(password string) string {
	s1 := sha1.Sum([]byte(password))
	s2 := sha1.Sum(s1[:])
	return "*" + strings.ToUpper(hex.EncodeToString(s2[:]))
}

// account is one row of mysql.global_priv.
type account struct {
	user, host string
	access     uint64
	role       bool
	guarded    int // how many of its own exact guarded-schema rows it has
}

// accountsSQL reads every account but the daemon's (the one running it)
// and MariaDB's own, with its global privileges, whether it is a role, and
// how many of the exact rows that keep the guarded schemas read-only to it
// it has. Where the daemon's account is '%' (a compute in a Pod, made by
// the image's entrypoint), the image's root@localhost is the image's own
// too: its entrypoint upgrades the datadir with it.
const accountsSQL = `SELECT g.User, g.Host,
  CAST(IFNULL(JSON_VALUE(g.Priv, '$.access'), 0) AS UNSIGNED),
  IFNULL(JSON_VALUE(g.Priv, '$.is_role'), '') IN ('1', 'true'),
  (SELECT COUNT(*) FROM mysql.db d WHERE d.User = g.User AND d.Host = g.Host AND d.Db IN ('mysql', 'sys')
    AND d.Select_priv = 'N' AND d.Insert_priv = 'N' AND d.Update_priv = 'N' AND d.Delete_priv = 'N')
FROM mysql.global_priv g
WHERE CONCAT(g.User, '@', g.Host) <> CURRENT_USER()
  AND NOT (g.Host = 'localhost' AND g.User = 'mariadb.sys')
  AND NOT (g.Host = 'localhost' AND g.User = 'root' AND CURRENT_USER() LIKE '%@\%')`

// Audit brings every account of the compute back inside the tenant
// privilege set and returns what it changed, for the log:
//   - an account with global privileges outside the set loses every
//     privilege; one at host '%' (a tenant role) gets the tenant set back;
//   - accounts without their exact mysql and sys rows get them;
//   - the anonymous guard rows are restored.
//
// Tenants cannot change accounts (they hold no CREATE USER or GRANT
// OPTION): this upgrades the grants of older versions, and undoes what a
// tenant did to an account through a hole in that reasoning.
//
// It runs before a compute is marked active and whenever the daemon copies
// users changed in SQL, as the daemon's account.
func Audit(db Execer) ([]string, error) {
	accts, err := accounts(db)
	if err != nil {
		return nil, err
	}
	var stmts []string
	for _, a := range accts {
		stmts = append(stmts, fixAccount(a)...)
	}
	guarded, err := guardRows(db)
	if err != nil {
		return nil, err
	}
	if guarded < 4 {
		stmts = append(stmts, GuardRows("", "localhost"), GuardRows("", "%"))
	}
	if len(stmts) > 0 {
		stmts = append(stmts, "FLUSH PRIVILEGES") // loads the guard rows
	}
	for _, q := range stmts {
		if _, err := db.Execute(q); err != nil {
			return nil, fmt.Errorf("restore the tenant privilege set: %s: %w", q, err)
		}
	}
	return stmts, nil
}

func accounts(db Execer) ([]account, error) {
	res, err := db.Execute(accountsSQL)
	if err != nil {
		return nil, fmt.Errorf("read the compute's accounts: %w", err)
	}
	defer res.Close()
	var out []account
	for i := range res.RowNumber() {
		var a account
		a.user, _ = res.GetString(i, 0)
		a.host, _ = res.GetString(i, 1)
		a.access, _ = res.GetUint(i, 2)
		role, _ := res.GetInt(i, 3)
		guarded, _ := res.GetInt(i, 4)
		a.role, a.guarded = role == 1, int(guarded)
		out = append(out, a)
	}
	return out, nil
}

// fixAccount returns the statements that bring one account inside the set.
func fixAccount(a account) []string {
	acct := Account(a.user, a.host)
	if a.role {
		acct = quoteIdent(a.user)
	}
	var stmts []string
	revoked := false
	if a.access&^tenantGlobalBits != 0 {
		stmts = append(stmts, "REVOKE ALL PRIVILEGES, GRANT OPTION FROM "+acct)
		if a.host == "%" && !a.role {
			return append(stmts, TenantGrants(a.user, a.host)...)
		}
		revoked = true // REVOKE ALL deletes the guard rows too
	}
	if revoked || a.guarded < len(guardedSchemas) {
		host := a.host
		if a.role {
			host = ""
		}
		stmts = append(stmts, GuardRows(a.user, host))
	}
	return stmts
}

func guardRows(db Execer) (int64, error) {
	res, err := db.Execute("SELECT COUNT(*) FROM mysql.db WHERE User = '' AND Db IN ('mysql', 'sys') AND Host IN ('localhost', '%') AND Select_priv = 'N'")
	if err != nil {
		return 0, fmt.Errorf("read the schema guard: %w", err)
	}
	defer res.Close()
	return res.GetInt(0, 0)
}

// Busy reports client work in progress: a statement running, or a
// transaction open (an idle-in-transaction session is work too). It returns
// a description for the log, or "" when the compute is idle. The daemon's
// own sessions never count.
func Busy(db Execer) (string, error) {
	res, err := db.Execute(`SELECT
  (SELECT COUNT(*) FROM information_schema.PROCESSLIST
    WHERE ID <> CONNECTION_ID() AND COMMAND NOT IN ('Sleep', 'Daemon', 'Killed', 'Binlog Dump')
      AND USER NOT IN ('system user', 'event_scheduler', ?)),
  (SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id <> CONNECTION_ID())`, AdminUser)
	if err != nil {
		return "", fmt.Errorf("check for running work: %w", err)
	}
	defer res.Close()
	running, _ := res.GetInt(0, 0)
	trx, _ := res.GetInt(0, 1)
	if running == 0 && trx == 0 {
		return "", nil
	}
	return strconv.FormatInt(running, 10) + " statements running, " + strconv.FormatInt(trx, 10) + " transactions open", nil
}
