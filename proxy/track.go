package proxy

import (
	"encoding/binary"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// tracker follows one response from the backend in chunks of any size, as
// a socket delivers them: it finds where each packet and the response end,
// and reads the packets that carry the session's state (OK, EOF, ERR, the
// column count, a prepared statement's OK). Both relay engines feed it:
// the goroutine engine from blocking reads, the event loop from whatever
// each readable event brings. Rows and column definitions pass through
// untouched; the packets it reads are held back until whole, then emitted
// as they came, or rewritten (a statement id, a session-state block the
// client did not ask for).
type tracker struct {
	ss   *session
	c    *command
	kind respKind

	// Framing of the current frame.
	head    [5]byte // header and first payload byte
	nhead   int
	headAt  int  // where the head began in the current chunk, or -1 if in an earlier one
	body    int  // payload bytes of the current frame still to come
	cont    bool // the current frame continues a packet
	capture bool // the current packet is collected whole
	pkt     []byte
	arena   []byte // the packets emitted by the current feed
	seq     byte

	// Grammar.
	state  trackState
	left   int   // packets left in sDefs
	groups []int // further definition groups of a prepare answer
	status uint16
	done   bool
	// wantClient: the backend waits for the client (LOCAL INFILE data,
	// an authentication answer); the caller relays that, then feeds on.
	wantClient bool
	prep       wire.PrepareOK
	emitted    bool // bytes of the response reached the client
}

// started reports whether part of the response reached the client.
func (t *tracker) started() bool { return t.emitted }

type trackState int

const (
	sFirst   trackState = iota // the first packet of a result
	sDefs                      // column or parameter definitions to pass
	sColEOF                    // the EOF after a result's column definitions
	sRows                      // rows up to a terminator
	sPrepare                   // the answer to COM_STMT_PREPARE
	sOne                       // a one-packet answer
	sAuth                      // a COM_CHANGE_USER exchange
)

func newTracker(ss *session, c *command, kind respKind) *tracker {
	t := &tracker{}
	t.reset(ss, c, kind)
	return t
}

// reset readies t for the response to c, keeping its buffers.
func (t *tracker) reset(ss *session, c *command, kind respKind) {
	*t = tracker{ss: ss, c: c, kind: kind, headAt: -1, pkt: t.pkt[:0], arena: t.arena[:0]}
	switch kind {
	case respPrepare:
		t.state = sPrepare
	case respRows:
		t.state = sRows
	case respFields:
		t.state = sRows // definitions up to a terminator look like rows
	case respOne:
		t.state = sOne
	case respChangeUser:
		t.state = sAuth
	case respNone:
		t.done = true
	}
}

// feed walks data, appending to segs what the client must get, in order.
// It returns the segments and how much of data it consumed: all of it,
// unless the response ended (done) or the backend now waits for the
// client (wantClient) before the end.
func (t *tracker) feed(data []byte, segs [][]byte) ([][]byte, int, error) {
	run := -1 // start of the pass-through run in data
	flush := func(end int) {
		if run >= 0 && end > run {
			segs = append(segs, data[run:end])
		}
		run = -1
	}
	t.headAt = -1
	t.arena = t.arena[:0]
	i := 0
	for i < len(data) && !t.done && !t.wantClient {
		if t.body > 0 {
			k := min(t.body, len(data)-i)
			if t.capture {
				t.pkt = append(t.pkt, data[i:i+k]...)
			} else if run < 0 {
				run = i
			}
			i += k
			t.body -= k
			if t.body == 0 {
				var err error
				if segs, err = t.endFrame(segs); err != nil {
					return segs, i, err
				}
			}
			continue
		}
		// The common case, a whole row or definition in the chunk,
		// passes in one step.
		if t.nhead == 0 && !t.cont && len(data)-i >= 5 {
			n := int(data[i]) | int(data[i+1])<<8 | int(data[i+2])<<16
			if n > 0 && n < mysql.MaxPayloadLen && len(data)-i >= 4+n && !t.wants(data[i+4], n) {
				if run < 0 {
					run = i
				}
				i += 4 + n
				t.passed()
				continue
			}
		}
		// At a frame's head: collect its header and first payload byte.
		if t.nhead == 0 {
			t.headAt = i
		}
		need := 4
		if t.nhead >= 4 {
			need = t.headLen()
		}
		for t.nhead < need && i < len(data) {
			t.head[t.nhead] = data[i]
			t.nhead++
			i++
			if t.nhead == 4 {
				need = t.headLen()
			}
		}
		if t.nhead < need {
			// The rest of the head comes with the next chunk, which
			// sends it whole (startFrame), so the bytes here stay back.
			if t.headAt >= 0 {
				flush(t.headAt)
			}
			return segs, i, nil
		}
		capture := !t.cont && t.wants(t.head[4], t.frameLen())
		if capture && t.headAt >= 0 {
			flush(t.headAt) // everything before this packet goes out first
		}
		var err error
		if segs, err = t.startFrame(segs, &run, capture); err != nil {
			return segs, i, err
		}
	}
	flush(i)
	return segs, i, nil
}

// headLen is how many head bytes the current frame has: its header, and
// the first payload byte of a packet that has one.
func (t *tracker) headLen() int {
	if t.frameLen() > 0 && !t.cont {
		return 5
	}
	return 4
}

func (t *tracker) frameLen() int {
	return int(t.head[0]) | int(t.head[1])<<8 | int(t.head[2])<<16
}

// startFrame starts a frame whose head is complete: collected whole
// (capture), or passed through.
func (t *tracker) startFrame(segs [][]byte, run *int, capture bool) ([][]byte, error) {
	n, headLen := t.frameLen(), t.nhead
	inChunk := t.headAt >= 0 // else the head began in an earlier chunk
	t.nhead = 0
	t.body = n - (headLen - 4)
	if capture {
		t.capture, t.seq = true, t.head[3]
		t.pkt = append(t.pkt[:0], t.head[4:headLen]...)
	} else {
		t.capture = false
		switch {
		case !inChunk:
			segs = append(segs, append([]byte(nil), t.head[:headLen]...))
		case *run < 0:
			*run = t.headAt
		}
	}
	if t.body == 0 {
		return t.endFrame(segs)
	}
	return segs, nil
}

// endFrame finishes a frame whose body is complete.
func (t *tracker) endFrame(segs [][]byte) ([][]byte, error) {
	n := t.frameLen()
	full := n == mysql.MaxPayloadLen
	if t.capture {
		t.cont = false
		p := t.pkt
		t.capture = false
		return t.packet(p, segs)
	}
	if !t.cont {
		t.passed()
	}
	t.cont = full
	return segs, nil
}

// wants reports whether a packet starting with first, of n bytes, must be
// read whole.
func (t *tracker) wants(first byte, n int) bool {
	if n >= mysql.MaxPayloadLen || n > maxControlPacket {
		return false
	}
	switch t.state {
	case sFirst, sColEOF, sPrepare, sAuth:
		return true
	case sOne:
		return t.c.code != mysql.COM_STATISTICS
	case sRows:
		return first == mysql.ERR_HEADER || first == mysql.EOF_HEADER && (t.ss.deprecateEOF() || n < 9)
	}
	return false
}

// passed advances the grammar past a packet that passed through.
func (t *tracker) passed() {
	switch t.state {
	case sDefs:
		t.left--
		if t.left == 0 {
			t.nextGroup()
		}
	case sOne: // COM_STATISTICS, or an answer too large to read
		t.done = true
	}
}

// emit appends a packet read whole to the client's segments. It is
// framed in the tracker's arena, which a feed's segments share: the
// caller writes or copies them before the next feed.
func (t *tracker) emit(segs [][]byte, p []byte) [][]byte {
	start := len(t.arena)
	t.arena, _ = wire.AppendPacket(t.arena, t.seq, p)
	return append(segs, t.arena[start:len(t.arena):len(t.arena)])
}

// packet handles a packet read whole.
func (t *tracker) packet(p []byte, segs [][]byte) ([][]byte, error) {
	if len(p) == 0 {
		return segs, &protocolError{"empty response packet"}
	}
	switch t.state {
	case sFirst:
		return t.first(p, segs)
	case sColEOF:
		end, ok := wire.EndStatus(p)
		if !ok || !wire.IsResultEnd(p, false) {
			return segs, &protocolError{"missing EOF after column definitions"}
		}
		t.status = end.Status
		t.ss.st.inTrans = end.Status&wire.StatusInTrans != 0
		if end.Status&wire.StatusCursorExists != 0 {
			t.done, t.c.ok = true, true // a cursor was opened: rows come with COM_STMT_FETCH
		} else {
			t.state = sRows
		}
		return t.emit(segs, p), nil
	case sRows:
		if p[0] == mysql.ERR_HEADER {
			return t.err(p, segs), nil
		}
		return t.terminator(p, segs)
	case sPrepare:
		return t.prepare(p, segs)
	case sOne:
		t.done = true
		if p[0] == mysql.OK_HEADER {
			t.c.ok = true
			return t.ok(p, segs)
		}
		t.c.ok = p[0] != mysql.ERR_HEADER
		return t.emit(segs, p), nil
	case sAuth:
		switch p[0] {
		case mysql.OK_HEADER:
			t.done, t.c.ok = true, true
			return t.ok(p, segs)
		case mysql.ERR_HEADER:
			t.done = true
		default:
			t.wantClient = true // an auth switch or more data: the client answers
		}
		return t.emit(segs, p), nil
	}
	return segs, &protocolError{"unexpected packet"}
}

// first handles the first packet of a result: OK, ERR, a LOCAL INFILE
// request, or a column count.
func (t *tracker) first(p []byte, segs [][]byte) ([][]byte, error) {
	switch p[0] {
	case mysql.OK_HEADER:
		segs, err := t.ok(p, segs)
		if err == nil && t.status&wire.StatusMoreResults == 0 {
			t.done, t.c.ok = true, true
		}
		return segs, err
	case mysql.ERR_HEADER:
		return t.err(p, segs), nil
	case 0xfb:
		t.wantClient = true
		return t.emit(segs, p), nil
	}
	cols, used, err := wire.LenencInt(p)
	if err != nil {
		return segs, &protocolError{"bad column count"}
	}
	// MARIADB_CLIENT_CACHE_METADATA adds a byte: 0 when the client has
	// the column definitions already.
	if used < len(p) && p[used] == 0 {
		cols = 0
	}
	t.left = int(cols)
	t.groups = nil
	if t.left > 0 {
		t.state = sDefs
	} else {
		t.nextGroup()
	}
	return t.emit(segs, p), nil
}

// nextGroup moves past a group of definitions: to the next group of a
// prepare answer, to the EOF that ends a result's column definitions, or
// to its rows.
func (t *tracker) nextGroup() {
	if t.state == sDefs && len(t.groups) > 0 || t.state == sPrepare {
		for len(t.groups) > 0 {
			t.left, t.groups = t.groups[0], t.groups[1:]
			if t.left > 0 {
				t.state = sDefs
				return
			}
		}
		t.done = true
		return
	}
	if t.kind == respPrepare {
		t.done = true
		return
	}
	if t.ss.deprecateEOF() {
		t.state = sRows
	} else {
		t.state = sColEOF
	}
}

// err handles an ERR packet. MariaDB's progress reports are ERR packets
// with code 0xFFFF that do not end the response.
func (t *tracker) err(p []byte, segs [][]byte) [][]byte {
	if !(len(p) >= 3 && binary.LittleEndian.Uint16(p[1:3]) == 0xffff) {
		t.done = true
	}
	return t.emit(segs, p)
}

// terminator handles a result set's EOF or OK-form end.
func (t *tracker) terminator(p []byte, segs [][]byte) ([][]byte, error) {
	if len(p) == 5 {
		end, _ := wire.EndStatus(p)
		t.status = end.Status
		t.ss.st.inTrans = end.Status&wire.StatusInTrans != 0
		segs = t.emit(segs, p)
	} else {
		var err error
		if segs, err = t.ok(p, segs); err != nil {
			return segs, err
		}
	}
	if t.status&wire.StatusMoreResults != 0 && t.kind == respResult {
		t.state = sFirst
	} else {
		t.done, t.c.ok = true, true
	}
	return segs, nil
}

// ok records an OK packet's state and emits it, without its
// session-state block for a client that did not ask for one.
func (t *tracker) ok(p []byte, segs [][]byte) ([][]byte, error) {
	ok, err := wire.ParseOK(p, true)
	if err != nil {
		return segs, &protocolError{err.Error()}
	}
	t.ss.st.observe(ok)
	t.status = ok.Status
	if len(ok.State) > 0 && !t.ss.clientTracks() {
		p = wire.StripState(p, ok)
	}
	return t.emit(segs, p), nil
}

// prepare handles the answer to COM_STMT_PREPARE: ERR, or the statement's
// OK, whose id becomes the one the client knows, followed by its
// parameter and column definitions (each group with an EOF unless
// CLIENT_DEPRECATE_EOF).
func (t *tracker) prepare(p []byte, segs [][]byte) ([][]byte, error) {
	if p[0] != mysql.OK_HEADER {
		t.done = true
		return t.emit(segs, p), nil
	}
	var err error
	if t.prep, err = wire.ParsePrepareOK(p); err != nil {
		return segs, &protocolError{err.Error()}
	}
	binary.LittleEndian.PutUint32(p[1:5], t.ss.prepared(t.c, t.prep))
	t.c.ok = true
	t.groups = nil
	for _, n := range []uint16{t.prep.Params, t.prep.Columns} {
		k := int(n)
		if k > 0 && !t.ss.deprecateEOF() {
			k++
		}
		t.groups = append(t.groups, k)
	}
	t.nextGroup()
	return t.emit(segs, p), nil
}
