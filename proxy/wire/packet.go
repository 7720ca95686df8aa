package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/packet"
)

// ErrPacketTooLarge is returned when a packet's declared size exceeds the
// caller's limit. It is detected from the header, before any allocation.
var ErrPacketTooLarge = errors.New("packet too large")

// ErrMalformed is wrapped by every parse error. Ours rather than
// mysql.ErrMalformPacket, whose text ("Malform packet error") would head
// every refusal logged for a bad handshake.
var ErrMalformed = errors.New("malformed packet")

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

// ReadPacket reads one logical packet (joining continuation frames) whose
// payload is at most limit bytes. It reads exactly the packet's bytes and
// never more, so r may be a raw connection whose next bytes belong to
// someone else (a TLS ClientHello, or the relay after the handshake).
// It returns the sequence id of the last frame.
// Ours: packet.Conn cannot refuse an oversized packet from its header alone.
func ReadPacket(r io.Reader, limit int) (seq byte, payload []byte, err error) {
	var hdr [4]byte
	for {
		if _, err = io.ReadFull(r, hdr[:]); err != nil {
			return 0, nil, err
		}
		n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		seq = hdr[3]
		if len(payload)+n > limit {
			return seq, nil, fmt.Errorf("%w: %d bytes declared, limit %d", ErrPacketTooLarge, len(payload)+n, limit)
		}
		start := len(payload)
		payload = append(payload, make([]byte, n)...)
		if _, err = io.ReadFull(r, payload[start:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return seq, nil, err
		}
		if n < mysql.MaxPayloadLen {
			return seq, payload, nil
		}
	}
}

// AppendPacket appends payload to dst framed with sequence ids starting at
// seq, splitting at mysql.MaxPayloadLen. It returns the next sequence id.
// Ours: packet.Conn writes to its connection, not into a caller's buffer.
func AppendPacket(dst []byte, seq byte, payload []byte) ([]byte, byte) {
	for {
		n := min(len(payload), mysql.MaxPayloadLen)
		dst = append(dst, byte(n), byte(n>>8), byte(n>>16), seq)
		dst = append(dst, payload[:n]...)
		seq++
		payload = payload[n:]
		if n < mysql.MaxPayloadLen {
			return dst, seq
		}
	}
}

// WritePacket frames payload and writes it in one Write call. It returns
// the next sequence id. Ours, to frame the client side like ReadPacket.
func WritePacket(w io.Writer, seq byte, payload []byte) (byte, error) {
	buf, next := AppendPacket(make([]byte, 0, len(payload)+4), seq, payload)
	_, err := w.Write(buf)
	return next, err
}

// Conn frames the proxy's login to a backend on go-mysql's packet.Conn,
// which also checks the backend's sequence ids. It is built with
// packet.NewTLSConn, the constructor without a bufio.Reader (whatever the
// transport), so it reads exactly the login's packets and the relay then
// takes the raw connection over with nothing swallowed. Each read is bounded
// by limit through ReadPacketTo with a bounded writer, so a declared size
// allocates nothing in advance.
type Conn struct {
	pc    *packet.Conn
	io    *ioConn
	limit int
}

// NewConn frames c, whose next byte is the start of a packet with sequence
// id 0, bounding every packet read to limit bytes.
func NewConn(c net.Conn, limit int) *Conn {
	ic := &ioConn{Conn: c}
	return &Conn{pc: packet.NewTLSConn(ic), io: ic, limit: limit}
}

// ReadPacket reads one logical packet, continuation frames included. A
// packet over the limit fails with ErrPacketTooLarge after at most limit
// bytes (plus one 16 KiB read) of it; an I/O failure returns the
// connection's own error, as the client side's ReadPacket does.
func (c *Conn) ReadPacket() ([]byte, error) {
	w := &boundedWriter{limit: c.limit}
	c.io.reset()
	if err := c.pc.ReadPacketTo(w); err != nil {
		// packet.Conn keeps its cause only as text: return the real one.
		switch {
		case w.err != nil:
			return nil, w.err
		case c.io.err == io.EOF && c.io.n > 0:
			return nil, io.ErrUnexpectedEOF
		case c.io.err != nil:
			return nil, c.io.err
		}
		return nil, err
	}
	return w.b, nil
}

// WritePacket frames payload with the next sequence id and writes it.
func (c *Conn) WritePacket(payload []byte) error {
	buf := make([]byte, 4, 4+len(payload)) // packet.Conn fills in the header
	c.io.reset()
	if err := c.pc.WritePacket(append(buf, payload...)); err != nil {
		if c.io.err != nil {
			return c.io.err
		}
		return err
	}
	return nil
}

// ioConn remembers the last I/O error and the bytes read since reset.
type ioConn struct {
	net.Conn
	n   int
	err error
}

func (c *ioConn) reset() { c.n, c.err = 0, nil }

func (c *ioConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n += n
	if err != nil {
		c.err = err
	}
	return n, err
}

func (c *ioConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		c.err = err
	}
	return n, err
}

// boundedWriter collects a packet's payload up to limit bytes.
type boundedWriter struct {
	b     []byte
	limit int
	err   error
}

func (w *boundedWriter) Write(p []byte) (int, error) {
	if len(w.b)+len(p) > w.limit {
		w.err = fmt.Errorf("%w: over %d bytes", ErrPacketTooLarge, w.limit)
		return 0, w.err
	}
	w.b = append(w.b, p...)
	return len(p), nil
}

// reader is a bounds-checked cursor over a payload; every method fails
// instead of panicking when the payload is short. Ours: go-mysql's
// LengthEncodedInt/LengthEncodedString index past the end of short input.
type reader struct {
	b   []byte
	pos int
}

func (r *reader) remaining() int { return len(r.b) - r.pos }

func (r *reader) bytes(n int, what string) ([]byte, error) {
	if n < 0 || r.remaining() < n {
		return nil, malformed(what + " truncated")
	}
	out := r.b[r.pos : r.pos+n]
	r.pos += n
	return out, nil
}

func (r *reader) byte1(what string) (byte, error) {
	b, err := r.bytes(1, what)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (r *reader) uint16(what string) (uint16, error) {
	b, err := r.bytes(2, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (r *reader) uint32(what string) (uint32, error) {
	b, err := r.bytes(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// nulString reads up to a NUL byte (consumed). A missing NUL is an error.
func (r *reader) nulString(what string) (string, error) {
	for i := r.pos; i < len(r.b); i++ {
		if r.b[i] == 0 {
			s := string(r.b[r.pos:i])
			r.pos = i + 1
			return s, nil
		}
	}
	return "", malformed(what + " not NUL-terminated")
}

// nulStringOrEOF reads up to a NUL byte or the end of the payload; some
// clients omit the final NUL of the last field.
func (r *reader) nulStringOrEOF() string {
	for i := r.pos; i < len(r.b); i++ {
		if r.b[i] == 0 {
			s := string(r.b[r.pos:i])
			r.pos = i + 1
			return s
		}
	}
	s := string(r.b[r.pos:])
	r.pos = len(r.b)
	return s
}

func (r *reader) lenencInt(what string) (uint64, error) {
	first, err := r.byte1(what)
	if err != nil {
		return 0, err
	}
	var n int
	switch first {
	case 0xfc:
		n = 2
	case 0xfd:
		n = 3
	case 0xfe:
		n = 8
	case 0xfb, 0xff:
		return 0, malformed(what + " is not a length")
	default:
		return uint64(first), nil
	}
	b, err := r.bytes(n, what)
	if err != nil {
		return 0, err
	}
	return mysql.FixedLengthInt(b), nil
}

func (r *reader) lenencBytes(what string) ([]byte, error) {
	n, err := r.lenencInt(what)
	if err != nil {
		return nil, err
	}
	if n > uint64(r.remaining()) {
		return nil, malformed(what + " truncated")
	}
	return r.bytes(int(n), what)
}

// ErrPayload builds the ERR packet payload (protocol 4.1 form) for e, as
// made by mysql.NewError or ParseErr. Ours: go-mysql only writes ERR packets
// from its server.Conn.
func ErrPayload(e *mysql.MyError) []byte {
	state := e.State
	if len(state) != 5 {
		state = mysql.DEFAULT_MYSQL_STATE
	}
	b := make([]byte, 0, 9+len(e.Message))
	b = append(b, mysql.ERR_HEADER, byte(e.Code), byte(e.Code>>8), '#')
	b = append(b, state...)
	return append(b, e.Message...)
}

// ParseErr decodes an ERR packet payload. Ours: go-mysql only reads ERR
// packets from its client.Conn.
func ParseErr(p []byte) (*mysql.MyError, error) {
	if len(p) < 3 || p[0] != mysql.ERR_HEADER {
		return nil, malformed("not an ERR packet")
	}
	e := &mysql.MyError{Code: binary.LittleEndian.Uint16(p[1:3]), State: mysql.DEFAULT_MYSQL_STATE}
	rest := p[3:]
	if len(rest) >= 6 && rest[0] == '#' {
		e.State = string(rest[1:6])
		rest = rest[6:]
	}
	e.Message = string(rest)
	return e, nil
}
