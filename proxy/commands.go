package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// rewriteKill maps "KILL [HARD|SOFT] [CONNECTION|QUERY] <id>" (and
// COM_PROCESS_KILL) from the connection id of our greeting to the backend
// thread id, when id is a session of the same project on the same compute.
// Anything else goes through unchanged: a backend id is the user's own
// business, and one of our ids for another project is unknown to this
// backend, which answers "Unknown thread id" by itself. It returns nil when
// p needs no change.
func (ss *session) rewriteKill(p []byte) []byte {
	if p[0] == mysql.COM_PROCESS_KILL {
		id := binary.LittleEndian.Uint32(p[1:])
		if to, ok := ss.s.mapKill(ss, uint64(id)); ok {
			out := append([]byte{mysql.COM_PROCESS_KILL}, 0, 0, 0, 0)
			binary.LittleEndian.PutUint32(out[1:], to)
			ss.logKill(id, to)
			ss.killsSession = id
			return out
		}
		return nil
	}
	words, id, ok := parseKill(p[1:])
	if !ok {
		return nil
	}
	to, ok := ss.s.mapKill(ss, id)
	if !ok {
		return nil
	}
	ss.logKill(uint32(id), to)
	if !strings.EqualFold(words[len(words)-1], "QUERY") {
		ss.killsSession = uint32(id)
	}
	q := strings.Join(append(words, strconv.FormatUint(uint64(to), 10)), " ")
	return append([]byte{mysql.COM_QUERY}, q...)
}

func (ss *session) logKill(from, to uint32) {
	ss.s.counters.inc(CountKillRewritten)
	ss.log.Info("kill mapped", "project", ss.project, "conn_id", from, "backend_thread", to)
}

// parseKill recognizes KILL [HARD|SOFT] [CONNECTION|QUERY] <digits> [;]
// and returns the words before the id. "KILL QUERY ID <query id>" and
// "KILL USER ..." do not match.
func parseKill(b []byte) (words []string, id uint64, ok bool) {
	t := bytes.TrimSpace(b)
	if len(t) < 4 || !bytes.EqualFold(t[:4], []byte("KILL")) {
		return nil, 0, false // the common case, decided without allocating
	}
	f := strings.Fields(strings.TrimSuffix(string(t), ";"))
	if len(f) < 2 || len(f) > 4 || !strings.EqualFold(f[0], "KILL") {
		return nil, 0, false
	}
	words = f[:len(f)-1]
	for i, w := range words[1:] {
		switch strings.ToUpper(w) {
		case "HARD", "SOFT":
			if i != 0 {
				return nil, 0, false
			}
		case "CONNECTION", "QUERY":
			if i != len(words)-2 {
				return nil, 0, false
			}
		default:
			return nil, 0, false
		}
	}
	id, err := strconv.ParseUint(f[len(f)-1], 10, 64)
	if err != nil {
		return nil, 0, false
	}
	return words, id, true
}

// mapKill finds the backend thread of our connection id, for a killer on
// the same project and compute only.
func (s *Server) mapKill(killer *session, id uint64) (uint32, bool) {
	thread, _, ok := s.killTarget(killer, id)
	return thread, ok
}

// endKilled closes the client session a successful KILL CONNECTION
// ended on the backend: without its backend connection it would otherwise
// attach again at its next command.
func (s *Server) endKilled(id uint32) {
	s.mu.Lock()
	t := s.sessions[id]
	s.mu.Unlock()
	if t != nil {
		t.close()
	}
}

// killTarget is mapKill that also returns the role the target session is
// logged in as.
func (s *Server) killTarget(killer *session, id uint64) (thread uint32, user string, ok bool) {
	if id < connIDBase || id > 1<<32-1 {
		return 0, "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.sessions[uint32(id)]
	if t == nil || !t.ready || t.projectID != killer.projectID ||
		t.computeID != killer.computeID || t.backendAddr != killer.backendAddr || (t.pooled() && t != killer) {
		// Another pooled session's link serves other sessions between its
		// commands: a KILL must never name its thread (killsPooled).
		return 0, "", false
	}
	return t.backendThread, t.backendUser, true
}

// changeUser re-authenticates a COM_CHANGE_USER against the Directory (its
// scramble was made with OUR nonce) and forwards it rewritten for the
// backend's nonce. A failure answers the client and keeps the session as
// it was, like MariaDB, which restores the previous user. Success resets
// the session's state on the backend, and so in the proxy.
func (ss *session) changeUser(c *command) error {
	if c.payload == nil || c.n > ss.s.cfg.MaxHandshakePacket {
		return ss.fatal(mysql.NewError(mysql.ER_NET_PACKET_TOO_LARGE, "serverlessd: COM_CHANGE_USER packet too large"))
	}
	cu, err := wire.ParseChangeUser(c.payload, ss.caps)
	if err != nil {
		return ss.fatal(mysql.NewError(mysql.ER_HANDSHAKE_ERROR, "Bad handshake"))
	}
	if cu.HasPlugin && cu.AuthPlugin != "" && cu.AuthPlugin != mysql.AUTH_NATIVE_PASSWORD {
		ss.s.counters.inc(CountChangeUserRefused)
		ss.replyErr(mysql.NewError(mysql.ER_NOT_SUPPORTED_AUTH_MODE,
			"serverlessd: COM_CHANGE_USER needs mysql_native_password, not "+cu.AuthPlugin))
		return nil
	}
	project, user := ss.route(cu.User)
	ctx, cancel := context.WithTimeout(ss.s.baseCtx, ss.s.cfg.HandshakeTimeout)
	defer cancel()
	stage1, _, err := ss.checkPassword(ctx, passwordCheck{login: cu.User, project: project, role: user,
		creds: credentials{scramble: cu.AuthResponse}, sameProject: ss.projectID})
	if err != nil {
		return ss.refuseChangeUser(cu.User, err)
	}
	prevStage1, prevUser := ss.stage1, ss.user
	ss.stage1, ss.user = stage1, user
	ss.s.mu.Lock()
	ss.backendUser = user
	ss.s.mu.Unlock()
	cu.User = user
	cu.AuthResponse = wire.NativeScramble(ss.link.nonce, stage1)
	cu.AuthPlugin = mysql.AUTH_NATIVE_PASSWORD
	ss.s.counters.inc(CountChangeUser)
	ss.log.Info("change user", "project", ss.project, "user", user)
	c.payload = cu.Marshal(ss.link.caps)
	c.n = len(c.payload)
	if err := ss.forward(c, respChangeUser); err != nil {
		return err
	}
	if !c.ok {
		ss.stage1, ss.user = prevStage1, prevUser
		ss.s.mu.Lock()
		ss.backendUser = prevUser
		ss.s.mu.Unlock()
		return nil
	}
	schema := ss.st.schema
	ss.st.reset(cu.Database)
	if cu.Database == "" {
		ss.st.schema = schema
	}
	ss.remapIDs = true
	ss.link.forgetStmts()
	ss.link.user = user
	return nil
}

// refuseChangeUser answers a refused COM_CHANGE_USER (1045, or 1129 while
// the source's failed-login bucket is empty) and keeps the session.
func (ss *session) refuseChangeUser(login string, err error) error {
	var r *refusal
	if !errors.As(err, &r) {
		return err
	}
	ss.s.counters.inc(CountChangeUserRefused)
	if r.kind == CountRateLimited {
		ss.s.counters.inc(CountRateLimited)
	}
	ss.log.Info("change user refused", "user", clip(login, 64), "reason", r.kind.String(), "err", r.cause)
	ss.replyErr(r.reply)
	return nil
}
