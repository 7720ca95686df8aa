package mariadb

import (
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

// OwnerRole is the role every project gets at creation; it may grant the
// tenant privilege set to users it creates in SQL.
const OwnerRole = "root"

// Users lists the compute's accounts at host '%' (the tenant's users) with
// their password hashes.
func Users(db Execer) (map[string]string, error) {
	res, err := db.Execute("SELECT User, Password FROM mysql.user WHERE Host = '%'")
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
	for _, r := range roles {
		want[r.Name] = true
		acct := Account(r.Name, "%")
		hash, ok := have[r.Name]
		switch {
		case !ok:
			stmts = append(stmts, fmt.Sprintf("CREATE USER %s IDENTIFIED BY PASSWORD %s", acct, quoteString(r.Hash)))
			stmts = append(stmts, TenantGrants(r.Name, "%", r.Name == OwnerRole)...)
		case !strings.EqualFold(hash, r.Hash):
			stmts = append(stmts, fmt.Sprintf("ALTER USER %s IDENTIFIED BY PASSWORD %s", acct, quoteString(r.Hash)))
		}
	}
	for name := range have {
		if !want[name] && keep(name) {
			stmts = append(stmts, fmt.Sprintf("DROP USER %s", Account(name, "%")))
		}
	}
	return stmts
}

// NativeHash matches a mysql_native_password hash as mysql.user stores it.
var NativeHash = regexp.MustCompile(`^\*[0-9A-F]{40}$`)

// account is one row of mysql.global_priv.
type account struct {
	user, host string
	access     uint64
	role       bool
	guarded    bool // has its own exact mysql schema row
}

// accountsSQL reads every account but the daemon's (the one running it)
// and MariaDB's own, with its global privileges, whether it is a role, and
// whether it has the exact mysql schema row that keeps that schema
// read-only to it. Where the daemon's account is '%' (a compute in a Pod,
// made by the image's entrypoint), the image's root@localhost is the
// image's own too: its entrypoint upgrades the datadir with it.
const accountsSQL = `SELECT g.User, g.Host,
  CAST(IFNULL(JSON_VALUE(g.Priv, '$.access'), 0) AS UNSIGNED),
  IFNULL(JSON_VALUE(g.Priv, '$.is_role'), '') IN ('1', 'true'),
  EXISTS (SELECT 1 FROM mysql.db d WHERE d.User = g.User AND d.Host = g.Host AND d.Db = 'mysql')
FROM mysql.global_priv g
WHERE CONCAT(g.User, '@', g.Host) <> CURRENT_USER()
  AND NOT (g.Host = 'localhost' AND g.User = 'mariadb.sys')
  AND NOT (g.Host = 'localhost' AND g.User = 'root' AND CURRENT_USER() LIKE '%@\%')`

// Audit brings every account of the compute back inside the tenant
// privilege set and returns what it changed, for the log:
//   - global privileges outside the set are revoked; an account that held
//     table privileges globally (the grants of older versions) gets the
//     tenant set on `%` instead;
//   - roles get the exact mysql schema row that users get from the
//     anonymous guard rows (MariaDB looks those up for users only);
//   - the guard rows themselves are restored.
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
	if guarded < 2 {
		stmts = append(stmts, SchemaGuardSQL, "FLUSH PRIVILEGES")
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
		a.role, a.guarded = role == 1, guarded == 1
		out = append(out, a)
	}
	return out, nil
}

// fixAccount returns the statements that bring one account inside the set.
func fixAccount(a account) []string {
	acct := Account(a.user, a.host)
	var stmts []string
	if a.role && !a.guarded {
		stmts = append(stmts, "GRANT SELECT ON `mysql`.* TO "+quoteIdent(a.user))
	}
	extra := a.access &^ tenantGlobalBits
	if extra == 0 {
		return stmts
	}
	if a.role {
		acct = quoteIdent(a.user)
	}
	stmts = append(stmts, "REVOKE ALL PRIVILEGES, GRANT OPTION FROM "+acct)
	if a.access&privSelect != 0 && !a.role {
		// Table privileges held globally: the grants of older versions.
		return append(stmts, TenantGrants(a.user, a.host, a.access&privGrant != 0)...)
	}
	if kept := globalNames(a.access & tenantGlobalBits &^ privGrant); kept != "" {
		opt := ""
		if a.access&privGrant != 0 {
			opt = " WITH GRANT OPTION"
		}
		stmts = append(stmts, "GRANT "+kept+" ON *.* TO "+acct+opt)
	}
	return stmts
}

// globalNames names the tenant global privileges in bits.
func globalNames(bits uint64) string {
	var names []string
	for _, p := range []struct {
		bit  uint64
		name string
	}{{privCreateUser, "CREATE USER"}, {privProcess, "PROCESS"}, {privShowDB, "SHOW DATABASES"}} {
		if bits&p.bit != 0 {
			names = append(names, p.name)
		}
	}
	return strings.Join(names, ", ")
}

func guardRows(db Execer) (int64, error) {
	res, err := db.Execute("SELECT COUNT(*) FROM mysql.db WHERE User = '' AND Db = 'mysql' AND Host IN ('localhost', '%')")
	if err != nil {
		return 0, fmt.Errorf("read the mysql schema guard: %w", err)
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
