package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// respKind is the shape of the response a command gets.
type respKind int

const (
	respResult     respKind = iota // OK, ERR, LOCAL INFILE, or result sets (COM_QUERY, COM_STMT_EXECUTE)
	respPrepare                    // COM_STMT_PREPARE
	respRows                       // rows and a terminator (COM_STMT_FETCH)
	respFields                     // column definitions and a terminator (COM_FIELD_LIST)
	respOne                        // one packet (COM_PING, COM_INIT_DB, COM_STATISTICS...)
	respNone                       // nothing (COM_STMT_SEND_LONG_DATA)
	respChangeUser                 // an authentication exchange ending in OK or ERR
)

// responseFor maps a command to its response's shape. Commands the proxy
// does not know get respOne: MariaDB answers every other command of the
// protocol's command phase with one packet.
func responseFor(code byte) respKind {
	switch code {
	case mysql.COM_QUERY, mysql.COM_STMT_EXECUTE, comStmtBulkExecute, mysql.COM_PROCESS_INFO:
		return respResult
	case mysql.COM_STMT_PREPARE:
		return respPrepare
	case mysql.COM_STMT_FETCH:
		return respRows
	case mysql.COM_FIELD_LIST:
		return respFields
	case mysql.COM_STMT_SEND_LONG_DATA:
		return respNone
	case mysql.COM_CHANGE_USER:
		return respChangeUser
	}
	return respOne
}

// maxControlPacket bounds the packets the relay reads whole (OK, ERR, EOF,
// column counts, requests): MariaDB's are far smaller.
const maxControlPacket = 1 << 20

// respReader relays one response from the backend to the client.
type respReader struct {
	ss      *session
	c       *command
	br      *bufio.Reader
	started bool // bytes of the response reached the client's buffer
	status  uint16
	prep    wire.PrepareOK
}

// relayResponse relays the response to c and records what it says about
// the session.
func (ss *session) relayResponse(c *command, kind respKind) error {
	r := &respReader{ss: ss, c: c, br: ss.link.br}
	var err error
	switch kind {
	case respResult:
		err = r.results()
	case respPrepare:
		err = r.prepare()
	case respRows:
		err = r.rows()
	case respFields:
		err = r.fields()
	case respOne:
		err = r.one()
	case respChangeUser:
		err = r.changeUser()
	}
	ss.lastStatus = r.status
	if err != nil {
		var perr *protocolError
		if errors.As(err, &perr) {
			return err
		}
		return ss.backendLost(err, r.started)
	}
	return nil
}

// protocolError is a response the relay cannot follow; the session ends.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "backend protocol error: " + e.msg }

// header reads the next packet header.
func (r *respReader) header() (seq byte, n int, err error) {
	h, err := r.br.Peek(4)
	if err != nil {
		return 0, 0, err
	}
	n = int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	seq = h[3]
	r.br.Discard(4)
	return seq, n, nil
}

// whole reads a packet of n bytes (n < the maximum frame) whole.
func (r *respReader) whole(n int) ([]byte, error) {
	if n > maxControlPacket {
		return nil, &protocolError{"control packet too large"}
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r.br, p)
	return p, err
}

// emit writes one packet to the client.
func (r *respReader) emit(seq byte, p []byte) {
	buf := r.ss.cw.AvailableBuffer()
	buf, _ = wire.AppendPacket(buf, seq, p)
	r.ss.cw.Write(buf)
	r.ss.bytesOut += int64(len(buf))
	r.started = true
}

// stream forwards a packet of n bytes (and its continuation frames)
// without reading it whole.
func (r *respReader) stream(seq byte, n int) error {
	hdr := [4]byte{byte(n), byte(n >> 8), byte(n >> 16), seq}
	r.started = true
	k, err := copyFrames(r.ss.cw, r.br, hdr, n)
	r.ss.bytesOut += k
	return err
}

// next reads the next packet's header and its first byte (0 for an empty
// packet) without consuming the body.
func (r *respReader) next() (seq byte, n int, first byte, err error) {
	if seq, n, err = r.header(); err != nil {
		return
	}
	if n > 0 {
		b, err := r.br.Peek(1)
		if err != nil {
			return seq, n, 0, err
		}
		first = b[0]
	}
	return
}

// ok relays an OK packet (or an OK-form terminator), records its state,
// and strips the session-state block for a client that did not ask for it.
func (r *respReader) ok(seq byte, p []byte) error {
	ok, err := wire.ParseOK(p, true)
	if err != nil {
		return &protocolError{err.Error()}
	}
	r.ss.st.observe(ok)
	r.status = ok.Status
	if len(ok.State) > 0 && !r.ss.clientTracks() {
		p = wire.StripState(p, ok)
	}
	r.emit(seq, p)
	return nil
}

// results relays a COM_QUERY or COM_STMT_EXECUTE response: OK, ERR, a
// LOCAL INFILE request, or result sets, as many as MORE_RESULTS chains.
func (r *respReader) results() error {
	for {
		seq, n, first, err := r.next()
		if err != nil {
			return err
		}
		switch {
		case n == 0:
			return &protocolError{"empty response packet"}
		case first == mysql.OK_HEADER:
			p, err := r.whole(n)
			if err != nil {
				return err
			}
			if err := r.ok(seq, p); err != nil {
				return err
			}
			if r.status&wire.StatusMoreResults == 0 {
				r.c.ok = true
				return nil
			}
		case first == mysql.ERR_HEADER:
			done, err := r.err(seq, n)
			if done || err != nil {
				return err
			}
		case first == 0xfb:
			if err := r.localInfile(seq, n); err != nil {
				return err
			}
		default:
			more, err := r.resultSet(seq, n)
			if err != nil || !more {
				r.c.ok = err == nil
				return err
			}
		}
	}
}

// err relays an ERR packet. MariaDB's progress reports are ERR packets
// with code 0xFFFF that do not end the response (done false).
func (r *respReader) err(seq byte, n int) (done bool, err error) {
	p, err := r.whole(n)
	if err != nil {
		return false, err
	}
	r.emit(seq, p)
	return !(len(p) >= 3 && binary.LittleEndian.Uint16(p[1:3]) == 0xffff), nil
}

// localInfile relays a LOCAL INFILE request, then the client's file
// contents up to its empty packet.
func (r *respReader) localInfile(seq byte, n int) error {
	p, err := r.whole(n)
	if err != nil {
		return err
	}
	r.emit(seq, p)
	if err := r.ss.cw.Flush(); err != nil {
		return err
	}
	bw := r.ss.link.bw
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(r.ss.cr, hdr[:]); err != nil {
			return err
		}
		k := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		m, err := copyFrames(bw, r.ss.cr, hdr, k)
		r.ss.bytesIn += m
		if err != nil {
			return err
		}
		if k == 0 {
			return bw.Flush()
		}
	}
}

// resultSet relays one result set from its column count packet on, and
// reports whether another result follows.
func (r *respReader) resultSet(seq byte, n int) (more bool, err error) {
	p, err := r.whole(n)
	if err != nil {
		return false, err
	}
	cols, used, err := wire.LenencInt(p)
	if err != nil {
		return false, &protocolError{"bad column count"}
	}
	r.emit(seq, p)
	// MARIADB_CLIENT_CACHE_METADATA adds a byte: 0 when the client has
	// the column definitions already.
	if used < len(p) && p[used] == 0 {
		cols = 0
	}
	for range cols {
		seq, k, err := r.header()
		if err != nil {
			return false, err
		}
		if err := r.stream(seq, k); err != nil {
			return false, err
		}
	}
	if !r.ss.deprecateEOF() {
		seq, k, err := r.header()
		if err != nil {
			return false, err
		}
		p, err := r.whole(k)
		if err != nil {
			return false, err
		}
		end, ok := wire.EndStatus(p)
		if !ok || !wire.IsResultEnd(p, false) {
			return false, &protocolError{"missing EOF after column definitions"}
		}
		r.status = end.Status
		r.emit(seq, p)
		if end.Status&wire.StatusCursorExists != 0 {
			r.ss.st.inTrans = end.Status&wire.StatusInTrans != 0
			return false, nil // a cursor was opened: rows come with COM_STMT_FETCH
		}
	}
	return r.rowsToEnd()
}

// rowsToEnd relays rows up to the result set's terminator and reports
// whether another result follows.
func (r *respReader) rowsToEnd() (more bool, err error) {
	deprecate := r.ss.deprecateEOF()
	for {
		seq, n, first, err := r.next()
		if err != nil {
			return false, err
		}
		switch {
		case first == mysql.ERR_HEADER && n < mysql.MaxPayloadLen:
			done, err := r.err(seq, n)
			if err != nil || done {
				return false, err
			}
		case first == mysql.EOF_HEADER && n < mysql.MaxPayloadLen && (deprecate || n < 9):
			p, err := r.whole(n)
			if err != nil {
				return false, err
			}
			if err := r.terminator(seq, p); err != nil {
				return false, err
			}
			return r.status&wire.StatusMoreResults != 0, nil
		default:
			if err := r.stream(seq, n); err != nil {
				return false, err
			}
		}
	}
}

// terminator relays a result set's EOF or OK-form end.
func (r *respReader) terminator(seq byte, p []byte) error {
	if len(p) == 5 {
		end, _ := wire.EndStatus(p)
		r.status = end.Status
		r.ss.st.inTrans = end.Status&wire.StatusInTrans != 0
		r.emit(seq, p)
		return nil
	}
	return r.ok(seq, p)
}

// rows relays a COM_STMT_FETCH response.
func (r *respReader) rows() error {
	_, err := r.rowsToEnd()
	r.c.ok = err == nil
	return err
}

// fields relays a COM_FIELD_LIST response: column definitions up to a
// terminator, or ERR.
func (r *respReader) fields() error {
	return r.untilEnd()
}

// untilEnd relays packets up to an ERR or a terminator.
func (r *respReader) untilEnd() error {
	_, err := r.rowsToEnd()
	return err
}

// one relays a one-packet response, reading its status when it is OK.
func (r *respReader) one() error {
	seq, n, first, err := r.next()
	if err != nil {
		return err
	}
	if n > 0 && n < mysql.MaxPayloadLen && first == mysql.OK_HEADER && r.c.code != mysql.COM_STATISTICS {
		p, err := r.whole(n)
		if err != nil {
			return err
		}
		r.c.ok = true
		return r.ok(seq, p)
	}
	r.c.ok = first != mysql.ERR_HEADER
	return r.stream(seq, n)
}

// prepare relays a COM_STMT_PREPARE response: ERR, or the statement's OK
// with its parameter and column definitions. The statement id in the OK
// is the client's (see session.prepared).
func (r *respReader) prepare() error {
	seq, n, first, err := r.next()
	if err != nil {
		return err
	}
	p, err := r.whole(n)
	if err != nil {
		return err
	}
	if first != mysql.OK_HEADER {
		r.emit(seq, p)
		return nil
	}
	if r.prep, err = wire.ParsePrepareOK(p); err != nil {
		return &protocolError{err.Error()}
	}
	binary.LittleEndian.PutUint32(p[1:5], r.ss.prepared(r.c, r.prep))
	r.emit(seq, p)
	r.c.ok = true
	return r.definitions(int(r.prep.Params), int(r.prep.Columns))
}

// definitions relays the parameter and column definitions that follow a
// prepare OK, each group followed by an EOF unless CLIENT_DEPRECATE_EOF.
func (r *respReader) definitions(groups ...int) error {
	for _, count := range groups {
		if count == 0 {
			continue
		}
		if !r.ss.deprecateEOF() {
			count++
		}
		for range count {
			seq, k, err := r.header()
			if err != nil {
				return err
			}
			if err := r.stream(seq, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// changeUser relays a COM_CHANGE_USER exchange: auth switch requests and
// the client's answers, up to OK or ERR.
func (r *respReader) changeUser() error {
	for {
		seq, n, first, err := r.next()
		if err != nil {
			return err
		}
		p, err := r.whole(n)
		if err != nil {
			return err
		}
		switch first {
		case mysql.OK_HEADER:
			r.c.ok = true
			return r.ok(seq, p)
		case mysql.ERR_HEADER:
			r.emit(seq, p)
			return nil
		}
		r.emit(seq, p)
		if err := r.ss.cw.Flush(); err != nil {
			return err
		}
		var hdr [4]byte
		if _, err := io.ReadFull(r.ss.cr, hdr[:]); err != nil {
			return err
		}
		k := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		if k >= mysql.MaxPayloadLen {
			return &protocolError{"auth answer too large"}
		}
		if _, err := copyFrames(r.ss.link.bw, r.ss.cr, hdr, k); err != nil {
			return err
		}
		if err := r.ss.link.bw.Flush(); err != nil {
			return err
		}
	}
}
