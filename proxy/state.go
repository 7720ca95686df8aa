package proxy

import (
	"sort"
	"strings"

	"github.com/serverlessd/serverlessd/proxy/wire"
)

// sessionState is what a client session carries from one backend
// connection to the next: what MariaDB's session trackers reported in OK
// packets, the prepared statements, a snapshot of the user variables, and
// what pins the session to its connection.
type sessionState struct {
	schema string
	vars   map[string]string // system variables the session changed, by name
	// trxNext replays the characteristics set for the next transaction
	// (SET TRANSACTION ...), as the tracker reports them.
	trxNext string
	// userVars is "@a=..., @b=..." from the last snapshot, or "".
	userVars string
	// unexplained: the state-change tracker fired without a schema or
	// variable change, so user variables may have changed since the
	// snapshot.
	unexplained bool
	// collationStale: the connection's character set changed, and the
	// tracker does not report the collation that came with it.
	collationStale bool
	// lastInsertID is LAST_INSERT_ID() as last read from the backend,
	// which a new connection gets back through LAST_INSERT_ID(expr).
	// insertDirty: an OK packet reported an insert id since; it is not
	// LAST_INSERT_ID() itself (an explicit id is reported too, and leaves
	// LAST_INSERT_ID() alone), so the value is read again before the
	// session leaves its connection.
	lastInsertID uint64
	insertDirty  bool
	// affected is the last OK packet's affected rows: ROW_COUNT().
	affected uint64

	stmts      map[uint32]*stmt // by the id the client knows
	nextStmtID uint32           // the next id handed out after a re-attach
	textStmts  map[string]textStmt

	// Pins: state that cannot move to another connection.
	inTrans    bool
	xa         bool
	userLocks  bool
	tableLocks bool
	tempTables int
	calcFound  bool
	longData   bool   // COM_STMT_SEND_LONG_DATA sent, its execute not yet
	lost       string // state the proxy cannot restore: pinned for good
}

// stmt is a statement prepared with COM_STMT_PREPARE.
type stmt struct {
	sql    []byte
	schema string
	params uint16
	types  []byte // parameter types of its last execute that sent them
	cursor bool   // a cursor is open on it
	// flags are its SQL's, applied after each successful execute as a
	// text query's are: a prepared CREATE TEMPORARY TABLE or GET_LOCK
	// pins as the same query sent as text does.
	flags sqlFlags
}

// textStmt is a statement prepared with SQL PREPARE.
type textStmt struct {
	query  string // the PREPARE statement itself
	schema string
}

func newSessionState(schema string) *sessionState {
	return &sessionState{schema: schema, vars: map[string]string{}, stmts: map[uint32]*stmt{}, textStmts: map[string]textStmt{}}
}

// pin names what keeps the session on its backend connection, or "".
func (st *sessionState) pin() string {
	switch {
	case st.lost != "":
		return st.lost
	case st.xa:
		return "an XA transaction"
	case st.inTrans:
		return "an open transaction"
	case st.tableLocks:
		return "LOCK TABLES"
	case st.userLocks:
		return "a GET_LOCK lock"
	case st.tempTables > 0:
		return "a temporary table"
	case st.calcFound:
		return "a pending SQL_CALC_FOUND_ROWS"
	case st.longData:
		return "a prepared statement's long data"
	}
	for _, s := range st.stmts {
		if s.cursor {
			return "an open cursor"
		}
	}
	return ""
}

// pinKind is pin() as a metric label.
func pinKind(reason string) string {
	switch reason {
	case "":
		return ""
	case "an XA transaction":
		return "xa"
	case "an open transaction":
		return "transaction"
	case "LOCK TABLES":
		return "lock_tables"
	case "a GET_LOCK lock":
		return "get_lock"
	case "a temporary table":
		return "temporary_table"
	case "a pending SQL_CALC_FOUND_ROWS":
		return "found_rows"
	case "an open cursor":
		return "cursor"
	case "a prepared statement's long data":
		return "long_data"
	}
	return "untracked_state"
}

// observe applies an OK packet or result-set terminator.
func (st *sessionState) observe(ok wire.OK) {
	st.inTrans = ok.Status&wire.StatusInTrans != 0
	if ok.InsertID != 0 {
		st.insertDirty = true
	}
	st.affected = ok.Affected
	if len(ok.State) == 0 {
		return
	}
	changes, err := wire.ParseState(ok.State)
	if err != nil {
		st.lost = "session state the proxy could not read"
		return
	}
	explained, changed := false, false
	for _, c := range changes {
		switch c.Type {
		case wire.TrackSchema:
			st.schema, explained = c.Name, true
		case wire.TrackSystemVariables:
			st.setVar(c.Name, c.Value)
			explained = true
		case wire.TrackStateChange:
			changed = true
		case wire.TrackTrxCharacter:
			st.trxNext = c.Value
		}
	}
	if changed && !explained {
		st.unexplained = true
	}
}

// setVar records a changed system variable. Turning a tracker off leaves
// the proxy blind to later changes, so the session is pinned.
func (st *sessionState) setVar(name, value string) {
	lname := strings.ToLower(name)
	switch lname {
	case "session_track_system_variables":
		if value != "*" {
			st.lost = "session tracking turned off (" + lname + ")"
		}
		return
	case "session_track_schema", "session_track_state_change":
		if !strings.EqualFold(value, "ON") {
			st.lost = "session tracking turned off (" + lname + ")"
		}
		return
	case "session_track_transaction_info":
		if !strings.EqualFold(value, "CHARACTERISTICS") {
			st.lost = "session tracking turned off (" + lname + ")"
		}
		return
	}
	st.vars[lname] = value
	if lname == "character_set_connection" {
		st.collationStale = true
	}
}

// reset forgets everything a COM_RESET_CONNECTION or COM_CHANGE_USER
// resets on the backend.
func (st *sessionState) reset(schema string) {
	*st = *newSessionState(schema)
}

// restoreSQL is one SET statement that gives a new connection the
// session's variables, or "" when there are none. Numbers go unquoted,
// since MariaDB refuses a string for a numeric variable.
func (st *sessionState) restoreSQL() string {
	names := make([]string, 0, len(st.vars))
	for n := range st.vars {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		if restorable(n) {
			parts = append(parts, "@@session."+n+"="+sqlValue(st.vars[n]))
		}
	}
	if st.userVars != "" {
		parts = append(parts, st.userVars)
	}
	if len(parts) == 0 {
		return ""
	}
	return "SET " + strings.Join(parts, ", ")
}

// restorable leaves out variables a session cannot set or that the
// connection sets itself.
func restorable(name string) bool {
	switch name {
	case "", "timestamp", "last_insert_id", "insert_id", "identity", "rand_seed1", "rand_seed2",
		"warning_count", "error_count", "pseudo_thread_id", "server_id", "gtid_seq_no",
		"in_transaction", "external_user", "proxy_user", "last_gtid":
		return false
	}
	return true
}

// sqlValue quotes v unless it is a plain decimal number: MariaDB refuses
// a string for a numeric variable.
func sqlValue(v string) string {
	if isNumber(v) {
		return v
	}
	return quoteString(v)
}

func isNumber(v string) bool {
	v = strings.TrimPrefix(v, "-")
	digits, dots := 0, 0
	for _, c := range v {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}

// quoteString makes v a SQL string literal. The restore runs on a fresh
// connection, parsed under the server's default sql_mode, where a
// backslash escapes.
func quoteString(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}
