package proxy

import (
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// cmdAction is what the relay does with a command frame from the client.
type cmdAction int

const (
	actForward    cmdAction = iota // stream it through
	actInspect                     // read it whole: it may be a KILL to map
	actQuit                        // forward it, then close
	actChangeUser                  // re-authenticate (goroutine relay only)
	actDaemon                      // a command the daemon answers itself (goroutine relay only)
)

// classifyCommand decides from a command's first byte and length.
func classifyCommand(cmd byte, n int) cmdAction {
	switch {
	case cmd == mysql.COM_QUIT:
		return actQuit
	case cmd == mysql.COM_QUERY && n <= maxInspectQuery, cmd == mysql.COM_PROCESS_KILL && n == 5:
		return actInspect
	case cmd == mysql.COM_CHANGE_USER:
		return actChangeUser
	}
	return actForward
}

// clientScanner follows the client->server stream in the event loop,
// where bytes arrive in whatever pieces the socket gives.
type clientScanner struct {
	st   cmdState
	body int // bytes of the current frame still to pass through
	// handOff reports whether an inspected command must go to the
	// goroutine relay, because the daemon answers it itself (a DROP while
	// the compute is read-only, a KILL of another role); nil: never.
	handOff func(p []byte) bool
}

// scan walks data from the client. It returns the bytes to send to the
// backend (data itself unless a KILL was rewritten), how much of data they
// cover, and actQuit or actChangeUser when such a command stops the walk.
// The rest of data (a partial header, or a command to inspect that is not
// whole yet) is for the caller to keep and pass again with more bytes.
// Such a rest is at most 4+maxInspectQuery bytes.
func (sc *clientScanner) scan(data []byte, rewrite func([]byte) []byte) (out []byte, used int, stop cmdAction) {
	var rewritten []byte // nil until a KILL is rewritten
	from := 0            // data[:from] is in rewritten already
	i := 0
	emit := func() []byte {
		if rewritten == nil {
			return data[:i]
		}
		return append(rewritten, data[from:i]...)
	}
	for i < len(data) {
		if sc.body > 0 {
			k := min(sc.body, len(data)-i)
			sc.body -= k
			i += k
			continue
		}
		if len(data)-i < 4 {
			break
		}
		n := int(data[i]) | int(data[i+1])<<8 | int(data[i+2])<<16
		// isCommand is true only for a frame at a command boundary, and
		// gives the same answer when the frame is walked again later
		// (below, when it is not whole yet).
		if !sc.st.isCommand(data[i+3], n) || n == 0 {
			sc.body = n
			i += 4
			continue
		}
		if len(data)-i < 5 {
			break
		}
		act := classifyCommand(data[i+4], n)
		if act == actChangeUser {
			return emit(), i, actChangeUser // seen again from its header
		}
		if act == actInspect && len(data)-i < 4+n {
			break
		}
		sc.st.infileOK = data[i+4] == mysql.COM_QUERY
		switch act {
		case actQuit:
			i += 4 + min(n, len(data)-i-4)
			return emit(), i, actQuit
		case actInspect:
			if sc.handOff != nil && sc.handOff(data[i+4:i+4+n]) {
				return emit(), i, actDaemon // seen again from its header
			}
			if r := rewrite(data[i+4 : i+4+n]); r != nil {
				rewritten = append(rewritten, data[from:i]...)
				rewritten, _ = wire.AppendPacket(rewritten, 0, r)
				from = i + 4 + n
			}
			i += 4 + n
		default:
			sc.body = n
			i += 4
		}
	}
	return emit(), i, actForward
}
