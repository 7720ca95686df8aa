package proxy

import (
	"bytes"
	"strings"
)

// sqlFlags are what a text query may do to the state that pins a session.
// They are read from the query's text because MariaDB reports none of
// them in a session tracker; each is applied only once the statement has
// succeeded.
type sqlFlags uint16

const (
	flagLockTables sqlFlags = 1 << iota
	flagUnlockTables
	flagNamedLock // GET_LOCK, RELEASE_LOCK or RELEASE_ALL_LOCKS: ask the backend
	flagCreateTemp
	flagDropTemp
	flagXAStart
	flagXAEnd
	flagCalcFound
	flagPrepare
	flagDeallocate
	flagBegin // START TRANSACTION / BEGIN also releases LOCK TABLES
	// flagInsertID: the query names LAST_INSERT_ID, which LAST_INSERT_ID(expr)
	// sets without an insert id in the OK packet.
	flagInsertID
)

// maxScanSQL bounds how much of a query is read for flags.
const maxScanSQL = 4096

// scanSQL returns the flags of a COM_QUERY text, and for PREPARE and
// DEALLOCATE the statement's name.
func scanSQL(q []byte) (f sqlFlags, name string) {
	q = q[:min(len(q), maxScanSQL)]
	words := firstWords(q, 4)
	if len(words) == 0 {
		return 0, ""
	}
	switch words[0] {
	case "LOCK":
		f |= flagLockTables
	case "UNLOCK":
		f |= flagUnlockTables
	case "BEGIN":
		f |= flagBegin
	case "START":
		if len(words) > 1 && words[1] == "TRANSACTION" {
			f |= flagBegin
		}
	case "CREATE":
		if contains(words[1:], "TEMPORARY") {
			f |= flagCreateTemp
		}
	case "DROP":
		if contains(words[1:], "TEMPORARY") {
			f |= flagDropTemp
		}
		if len(words) > 2 && words[1] == "PREPARE" {
			f, name = f|flagDeallocate, words[2]
		}
	case "XA":
		if len(words) > 1 {
			switch words[1] {
			case "START", "BEGIN":
				f |= flagXAStart
			case "COMMIT", "ROLLBACK":
				f |= flagXAEnd
			}
		}
	case "PREPARE":
		if len(words) > 1 {
			f, name = f|flagPrepare, words[1]
		}
	case "DEALLOCATE":
		if len(words) > 2 {
			f, name = f|flagDeallocate, words[2]
		}
	}
	if bytes.IndexByte(q, '_') >= 0 {
		if containsFold(q, "GET_LOCK") || containsFold(q, "RELEASE_LOCK") || containsFold(q, "RELEASE_ALL_LOCKS") {
			f |= flagNamedLock
		}
		if containsFold(q, "SQL_CALC_FOUND_ROWS") {
			f |= flagCalcFound
		}
		if containsFold(q, "LAST_INSERT_ID") {
			f |= flagInsertID
		}
	}
	return f, name
}

// containsFold reports whether q contains the upper-case ASCII word w in
// any case, without copying q (every query passes here).
func containsFold(q []byte, w string) bool {
	for i := 0; i+len(w) <= len(q); i++ {
		if q[i]&^0x20 == w[0] && bytes.EqualFold(q[i:i+len(w)], []byte(w)) {
			return true
		}
	}
	return false
}

func contains(words []string, w string) bool {
	for _, x := range words {
		if x == w {
			return true
		}
	}
	return false
}

// firstWords returns up to n leading words of q, upper-cased, after
// comments and whitespace; a name keeps its case and loses its backquotes.
func firstWords(q []byte, n int) []string {
	var out []string
	i := 0
	for len(out) < n {
		i = skipSpaceAndComments(q, i)
		if i >= len(q) {
			break
		}
		j := i
		if q[i] == '`' {
			j = bytes.IndexByte(q[i+1:], '`')
			if j < 0 {
				break
			}
			out = append(out, wordCase(out, string(q[i+1:i+1+j])))
			i += j + 2
			continue
		}
		for j < len(q) && isWordByte(q[j]) {
			j++
		}
		if j == i {
			break
		}
		out = append(out, wordCase(out, string(q[i:j])))
		i = j
	}
	return out
}

// wordCase upper-cases keywords; the word after PREPARE (in PREPARE,
// DEALLOCATE PREPARE and DROP PREPARE) is a statement name and keeps its
// case.
func wordCase(prev []string, w string) string {
	if len(prev) > 0 && prev[len(prev)-1] == "PREPARE" {
		return w
	}
	return strings.ToUpper(w)
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '$' || c >= 0x80
}

// skipSpaceAndComments skips whitespace and /* */, -- and # comments.
func skipSpaceAndComments(q []byte, i int) int {
	for i < len(q) {
		switch {
		case q[i] == ' ' || q[i] == '\t' || q[i] == '\n' || q[i] == '\r' || q[i] == ';' || q[i] == '(':
			i++
		case bytes.HasPrefix(q[i:], []byte("/*")):
			end := bytes.Index(q[i+2:], []byte("*/"))
			if end < 0 {
				return len(q)
			}
			i += end + 4
		case q[i] == '#' || bytes.HasPrefix(q[i:], []byte("-- ")):
			end := bytes.IndexByte(q[i:], '\n')
			if end < 0 {
				return len(q)
			}
			i += end + 1
		default:
			return i
		}
	}
	return i
}
