package mariadb

// SessionOptions are the mariadbd options every compute runs with so that
// the proxy can move a client session from one connection to the next (a
// suspend and resume, or a crash): every OK packet then reports the
// session's default schema, each system variable it changes with its new
// value, that some other state changed (user variables, temporary tables,
// prepared statements), and the characteristics set for the next
// transaction. Set as server defaults rather than with a SET at each login,
// they cost a login no round trip.
//
// The metadata_lock_info plugin lets the proxy ask, after a statement that
// takes or frees a named lock (GET_LOCK, LOCK TABLES), whether the session
// still holds one, instead of guessing from the SQL.
var SessionOptions = []string{
	"session-track-schema=ON",
	"session-track-state-change=ON",
	"session-track-system-variables=*",
	"session-track-transaction-info=CHARACTERISTICS",
	"plugin-load-add=metadata_lock_info",
}

// HeldLocksSQL counts the named locks (GET_LOCK) and table locks (LOCK
// TABLES, or a transaction's) the calling session holds.
const HeldLocksSQL = `SELECT
  COALESCE(SUM(LOCK_TYPE = 'User lock'), 0),
  COALESCE(SUM(LOCK_TYPE <> 'User lock'), 0)
FROM information_schema.METADATA_LOCK_INFO WHERE THREAD_ID = CONNECTION_ID()`

// UserVariablesSQL lists the calling session's user variables with their
// types, so that they can be set again on another connection.
const UserVariablesSQL = `SELECT VARIABLE_NAME, VARIABLE_VALUE, VARIABLE_TYPE, CHARACTER_SET_NAME
FROM information_schema.USER_VARIABLES`
