package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrPacketTooLarge is returned when a packet's declared size exceeds the
// caller's limit. It is detected from the header, before any allocation.
var ErrPacketTooLarge = errors.New("packet too large")

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("malformed packet")

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

// ReadPacket reads one logical packet (joining continuation frames) whose
// payload is at most limit bytes. It reads exactly the packet's bytes and
// never more, so r may be a raw connection whose next bytes belong to
// someone else (a TLS ClientHello, or the relay after the handshake).
// It returns the sequence id of the last frame.
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
		if n < MaxPayload {
			return seq, payload, nil
		}
	}
}

// AppendPacket appends payload to dst framed with sequence ids starting at
// seq, splitting at MaxPayload. It returns the next sequence id.
func AppendPacket(dst []byte, seq byte, payload []byte) ([]byte, byte) {
	for {
		n := min(len(payload), MaxPayload)
		dst = append(dst, byte(n), byte(n>>8), byte(n>>16), seq)
		dst = append(dst, payload[:n]...)
		seq++
		payload = payload[n:]
		if n < MaxPayload {
			return dst, seq
		}
	}
}

// WritePacket frames payload and writes it in one Write call. It returns
// the next sequence id.
func WritePacket(w io.Writer, seq byte, payload []byte) (byte, error) {
	buf, next := AppendPacket(make([]byte, 0, len(payload)+4), seq, payload)
	_, err := w.Write(buf)
	return next, err
}

// AppendLenencInt appends a length-encoded integer.
func AppendLenencInt(b []byte, n uint64) []byte {
	switch {
	case n < 251:
		return append(b, byte(n))
	case n < 1<<16:
		return append(b, 0xfc, byte(n), byte(n>>8))
	case n < 1<<24:
		return append(b, 0xfd, byte(n), byte(n>>8), byte(n>>16))
	default:
		b = append(b, 0xfe)
		return binary.LittleEndian.AppendUint64(b, n)
	}
}

// reader is a bounds-checked cursor over a payload; every method fails
// instead of panicking when the payload is short.
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
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
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

// ServerError is an ERR packet, from a backend or made by the proxy.
type ServerError struct {
	Code    uint16
	State   string
	Message string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("Error %d (%s): %s", e.Code, e.State, e.Message)
}

// ErrPayload builds an ERR packet payload (protocol 4.1 form).
func ErrPayload(code uint16, state, msg string) []byte {
	if len(state) != 5 {
		state = "HY000"
	}
	b := make([]byte, 0, 9+len(msg))
	b = append(b, ErrHeader, byte(code), byte(code>>8), '#')
	b = append(b, state...)
	return append(b, msg...)
}

// Payload returns the ERR packet for e.
func (e *ServerError) Payload() []byte { return ErrPayload(e.Code, e.State, e.Message) }

// ParseErr decodes an ERR packet payload.
func ParseErr(p []byte) (*ServerError, error) {
	if len(p) < 3 || p[0] != ErrHeader {
		return nil, malformed("not an ERR packet")
	}
	e := &ServerError{Code: binary.LittleEndian.Uint16(p[1:3]), State: "HY000"}
	rest := p[3:]
	if len(rest) >= 6 && rest[0] == '#' {
		e.State = string(rest[1:6])
		rest = rest[6:]
	}
	e.Message = string(rest)
	return e, nil
}
