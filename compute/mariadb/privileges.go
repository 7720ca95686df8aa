// Package mariadb is the daemon's administration of a compute's MariaDB:
// the privileges tenant roles get, the daemon's own account, the sync of
// roles between the store and the compute, and the idle check. Both drivers
// and the lifecycle use it; no other package builds SQL against a compute.
package mariadb

import (
	"fmt"
	"strings"
)

// AdminUser is the daemon's own account in every compute. Role names
// starting with "serverlessd" are reserved, so no tenant role can take it,
// and the proxy never routes a login to it.
const AdminUser = "serverlessd_admin"

// A tenant role gets what an application and its migrations need, and
// nothing that reaches past its own databases:
//
//   - every table privilege on every schema (`%`) but the mysql and sys
//     schemas, which it cannot touch at all: write access to the grant
//     tables (global_priv, db, proc) is full control, since the next GRANT
//     or start loads whatever was written there; sys holds routines that
//     run as mariadb.sys, which may delete from mysql.global_priv; and
//     even a read (SELECT ... FOR UPDATE) of the grant tables makes the
//     daemon's own statements wait;
//   - two harmless global privileges: PROCESS (its own threads, InnoDB
//     status) and SHOW DATABASES.
//
// Withheld, and why:
//   - CREATE USER, and GRANT OPTION: CREATE USER covers RENAME, ALTER and
//     DROP USER of every account, the daemon's included; renamed to a
//     tenant's name, the daemon's account is every privilege in the
//     tenant's hands. No MariaDB privilege scopes it to some accounts, so
//     users are made through the API (a role per user), and GRANT OPTION
//     would only pass privileges to PUBLIC (which the guard rows do not
//     cover) and to MariaDB's own accounts;
//   - SUPER, CONNECTION ADMIN, READ_ONLY ADMIN and the other admin
//     privileges: they allow SET GLOBAL (general_log_file writes files,
//     innodb_buffer_pool_size and max_connections escape the compute's
//     sizing, read_only escapes the storage limit) and extra connections
//     past max_connections, which are the daemon's reserve;
//   - FILE: reading and writing files of the host;
//   - SHUTDOWN and RELOAD: the daemon stops and flushes its computes;
//   - SET USER: creating objects that run as another account;
//   - REPLICATION, BINLOG and CREATE TABLESPACE: there is no replication,
//     binlog or shared tablespace for a tenant to manage.
//
// KILL needs no privilege for a role's own threads; the daemon kills
// another role's, for the proxy.
var (
	tenantGlobal = []string{"PROCESS", "SHOW DATABASES"}
	tenantSchema = []string{
		"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "REFERENCES", "INDEX", "ALTER",
		"CREATE TEMPORARY TABLES", "LOCK TABLES", "EXECUTE", "CREATE VIEW", "SHOW VIEW",
		"CREATE ROUTINE", "ALTER ROUTINE", "EVENT", "TRIGGER", "DELETE HISTORY",
	}
	// guardedSchemas are read-only to tenants.
	guardedSchemas = []string{"mysql", "sys"}
)

// Bits of mysql.global_priv's "access" field (MariaDB's privilege_t).
const (
	privSelect  uint64 = 1 << 0
	privProcess uint64 = 1 << 8
	privShowDB  uint64 = 1 << 14
	// tenantGlobalBits are the global privileges a tenant account may hold.
	tenantGlobalBits = privProcess | privShowDB
)

// TenantGrants returns the statements that give user@host the tenant
// privilege set. They end with guard rows, which take effect at the next
// FLUSH PRIVILEGES.
func TenantGrants(user, host string) []string {
	acct := Account(user, host)
	return []string{
		fmt.Sprintf("GRANT %s ON *.* TO %s", strings.Join(tenantGlobal, ", "), acct),
		fmt.Sprintf("GRANT %s ON `%%`.* TO %s", strings.Join(tenantSchema, ", "), acct),
		GuardRows(user, host),
	}
}

// GuardRows returns the statement that gives user@host (host ” for a
// role) a row of mysql.db for each guarded schema with no privilege at
// all. MariaDB takes an account's schema privileges from the first
// matching row in its sort order, and an exact schema name sorts before a
// pattern such as `%`: so the `%` grant never reaches these schemas. No
// GRANT makes a row without privileges; it is written directly and read
// at the next FLUSH PRIVILEGES (or start).
func GuardRows(user, host string) string {
	var rows []string
	for _, s := range guardedSchemas {
		rows = append(rows, fmt.Sprintf("(%s, %s, %s)", quoteString(host), quoteString(s), quoteString(user)))
	}
	return "INSERT INTO mysql.db (Host, Db, User) VALUES " + strings.Join(rows, ", ") +
		" ON DUPLICATE KEY UPDATE Select_priv = 'N'"
}

// Account quotes user@host. Names are checked by the callers (role names
// use a safe alphabet); backquotes and quotes are escaped all the same.
func Account(user, host string) string {
	return quoteIdent(user) + "@" + quoteIdent(host)
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

func quoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
