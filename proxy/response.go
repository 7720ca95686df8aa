package proxy

import (
	"errors"
	"io"

	"github.com/go-mysql-org/go-mysql/mysql"
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

// relayResponse relays the response to c, following it with a tracker,
// and records what it says about the session.
func (ss *session) relayResponse(c *command, kind respKind) error {
	return ss.finishResponse(newTracker(ss, c, kind))
}

// finishResponse relays the rest of the response t follows: all of it,
// or what an event loop left when the backend waited for the client.
func (ss *session) finishResponse(t *tracker) error {
	err := ss.relayTracked(t)
	ss.lastStatus = t.status
	if err != nil {
		var perr *protocolError
		if errors.As(err, &perr) {
			return err
		}
		return ss.backendLost(err, t.started())
	}
	return nil
}

// relayTracked feeds the backend's bytes to t and writes what it emits to
// the client, until the response ends.
func (ss *session) relayTracked(t *tracker) error {
	l := ss.link
	if ss.respBuf == nil {
		ss.respBuf = respBufs.get()
	}
	var segs [][]byte
	for !t.done {
		if t.wantClient {
			if err := ss.answerBackend(t); err != nil {
				return err
			}
			continue
		}
		n, err := l.br.Read(ss.respBuf)
		if n == 0 && err != nil {
			return err
		}
		data := ss.respBuf[:n]
		for len(data) > 0 {
			var used int
			segs, used, err = t.feed(data, segs[:0])
			for _, sg := range segs {
				ss.cw.Write(sg)
				ss.bytesOut += int64(len(sg))
				t.emitted = true
			}
			if err != nil {
				return err
			}
			data = data[used:]
			if len(data) > 0 && t.wantClient {
				if err := ss.answerBackend(t); err != nil {
					return err
				}
				continue
			}
			if len(data) > 0 {
				return &protocolError{"bytes after the end of a response"}
			}
		}
	}
	return nil
}

// answerBackend relays what the backend waits for from the client: LOCAL
// INFILE data up to its empty packet, or one authentication answer.
func (ss *session) answerBackend(t *tracker) error {
	if err := ss.cw.Flush(); err != nil {
		return err
	}
	bw := ss.link.bw
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(ss.cr, hdr[:]); err != nil {
			return err
		}
		k := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		m, err := copyFrames(bw, ss.cr, hdr, k)
		ss.bytesIn += m
		if err != nil {
			return err
		}
		if t.state == sAuth || k == 0 {
			t.wantClient = false
			return bw.Flush()
		}
	}
}

// protocolError is a response the relay cannot follow; the session ends.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "backend protocol error: " + e.msg }
