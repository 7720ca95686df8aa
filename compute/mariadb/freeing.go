package mariadb

import (
	"errors"
	"strings"
)

// ErrNotFreeing means a statement is not one that frees space.
var ErrNotFreeing = errors.New("not a DROP TABLE, DROP DATABASE or TRUNCATE statement")

// Freeing is a statement that frees space in a compute that is read-only
// for its storage: DROP TABLE, DROP DATABASE or TRUNCATE TABLE.
type Freeing struct {
	Verb     string      // "DROP TABLE", "DROP DATABASE", "TRUNCATE TABLE"
	IfExists bool        // DROP ... IF EXISTS
	Names    [][2]string // schema (may be empty), name; for DROP DATABASE the name only
}

// ParseFreeing recognizes a freeing statement in a client's query, so that
// the daemon lifts read_only for it. It is strict: one statement, no
// comments, names plain or in backquotes; anything else (a second
// statement that would write) is not let through.
func ParseFreeing(query string) (*Freeing, error) {
	toks, err := tokenize(strings.TrimSuffix(strings.TrimSpace(query), ";"))
	if err != nil {
		return nil, err
	}
	f := &Freeing{}
	rest := toks
	switch {
	case match(rest, "DROP", "TABLE"), match(rest, "DROP", "TABLES"):
		f.Verb, rest = "DROP TABLE", rest[2:]
	case match(rest, "DROP", "DATABASE"), match(rest, "DROP", "SCHEMA"):
		f.Verb, rest = "DROP DATABASE", rest[2:]
	case match(rest, "TRUNCATE", "TABLE"):
		f.Verb, rest = "TRUNCATE TABLE", rest[2:]
	case match(rest, "TRUNCATE"):
		f.Verb, rest = "TRUNCATE TABLE", rest[1:]
	default:
		return nil, ErrNotFreeing
	}
	if f.Verb != "TRUNCATE TABLE" && match(rest, "IF", "EXISTS") {
		f.IfExists, rest = true, rest[2:]
	}
	for len(rest) > 0 {
		var name [2]string
		if name, rest, err = qualifiedName(rest, f.Verb == "DROP DATABASE"); err != nil {
			return nil, err
		}
		f.Names = append(f.Names, name)
		if len(rest) > 0 {
			if rest[0] != "," || f.Verb != "DROP TABLE" {
				return nil, ErrNotFreeing
			}
			rest = rest[1:]
		}
	}
	if len(f.Names) == 0 {
		return nil, ErrNotFreeing
	}
	return f, nil
}

func match(toks []string, words ...string) bool {
	if len(toks) < len(words) {
		return false
	}
	for i, w := range words {
		if !strings.EqualFold(toks[i], w) {
			return false
		}
	}
	return true
}

// qualifiedName reads name or schema.name from toks.
func qualifiedName(toks []string, bare bool) ([2]string, []string, error) {
	if len(toks) == 0 || !isName(toks[0]) {
		return [2]string{}, nil, ErrNotFreeing
	}
	if !bare && len(toks) >= 3 && toks[1] == "." && isName(toks[2]) {
		return [2]string{unquote(toks[0]), unquote(toks[2])}, toks[3:], nil
	}
	return [2]string{"", unquote(toks[0])}, toks[1:], nil
}

func isName(t string) bool { return t != "," && t != "." }

func unquote(t string) string {
	if strings.HasPrefix(t, "`") {
		return strings.ReplaceAll(t[1:len(t)-1], "``", "`")
	}
	return t
}

// tokenize splits words, backquoted names, commas and dots. Anything else
// (quotes, comments, a second statement) is not a freeing statement.
func tokenize(s string) ([]string, error) {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == ',' || c == '.':
			toks = append(toks, string(c))
			i++
		case c == '`':
			j := i + 1
			for ; j < len(s); j++ {
				if s[j] == '`' {
					if j+1 < len(s) && s[j+1] == '`' {
						j++
						continue
					}
					break
				}
			}
			if j >= len(s) || j == i+1 {
				return nil, ErrNotFreeing
			}
			toks = append(toks, s[i:j+1])
			i = j + 1
		case isWordByte(c):
			j := i
			for j < len(s) && isWordByte(s[j]) {
				j++
			}
			toks = append(toks, s[i:j])
			i = j
		default:
			return nil, ErrNotFreeing
		}
	}
	return toks, nil
}

func isWordByte(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}
