package wire

import (
	"encoding/binary"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// Server status flags the relay follows, and the session-tracker types,
// which go-mysql does not define.
const (
	StatusSessionStateChanged uint16 = mysql.SERVER_SESSION_STATE_CHANGED
	StatusCursorExists        uint16 = mysql.SERVER_STATUS_CURSOR_EXISTS
	StatusLastRowSent         uint16 = mysql.SERVER_STATUS_LAST_ROW_SEND
	StatusMoreResults         uint16 = mysql.SERVER_MORE_RESULTS_EXISTS
	StatusInTrans             uint16 = mysql.SERVER_STATUS_IN_TRANS

	TrackSystemVariables = 0 // SESSION_TRACK_SYSTEM_VARIABLES
	TrackSchema          = 1 // SESSION_TRACK_SCHEMA
	TrackStateChange     = 2 // SESSION_TRACK_STATE_CHANGE
	TrackTrxCharacter    = 4 // SESSION_TRACK_TRANSACTION_CHARACTERISTICS
)

// OK is a decoded OK packet (header 0x00, or 0xFE where it ends a result
// set under CLIENT_DEPRECATE_EOF).
type OK struct {
	Affected, InsertID uint64
	Status, Warnings   uint16
	Info               []byte
	// State is the raw session-state block; set only when Status has
	// StatusSessionStateChanged and the connection tracks sessions.
	State []byte
}

// ParseOK decodes an OK payload; sessionTrack tells whether the
// connection negotiated CLIENT_SESSION_TRACK. MariaDB writes the info as
// a length-encoded string whether or not it did.
func ParseOK(p []byte, sessionTrack bool) (OK, error) {
	var ok OK
	r := &reader{b: p}
	if _, err := r.byte1("OK header"); err != nil {
		return ok, err
	}
	var err error
	if ok.Affected, err = r.lenencInt("affected rows"); err != nil {
		return ok, err
	}
	if ok.InsertID, err = r.lenencInt("insert id"); err != nil {
		return ok, err
	}
	if ok.Status, err = r.uint16("status"); err != nil {
		return ok, err
	}
	if ok.Warnings, err = r.uint16("warnings"); err != nil {
		return ok, err
	}
	if r.remaining() == 0 {
		return ok, nil
	}
	if ok.Info, err = r.lenencBytes("info"); err != nil {
		return ok, err
	}
	if sessionTrack && ok.Status&StatusSessionStateChanged != 0 && r.remaining() > 0 {
		if ok.State, err = r.lenencBytes("session state"); err != nil {
			return ok, err
		}
	}
	return ok, nil
}

// StripState rebuilds an OK payload without its session-state block, for
// a client that did not negotiate CLIENT_SESSION_TRACK.
func StripState(p []byte, ok OK) []byte {
	out := make([]byte, 0, len(p))
	out = append(out, p[0])
	out = mysql.AppendLengthEncodedInteger(out, ok.Affected)
	out = mysql.AppendLengthEncodedInteger(out, ok.InsertID)
	out = binary.LittleEndian.AppendUint16(out, ok.Status&^StatusSessionStateChanged)
	out = binary.LittleEndian.AppendUint16(out, ok.Warnings)
	if len(ok.Info) > 0 {
		out = mysql.AppendLengthEncodedInteger(out, uint64(len(ok.Info)))
		out = append(out, ok.Info...)
	}
	return out
}

// StateChange is one entry of a session-state block.
type StateChange struct {
	Type        byte
	Name, Value string // Name: a variable (Type 0) or schema (Type 1)
}

// ParseState decodes a session-state block into its entries. Entries of
// types it does not know are returned with their raw data in Value.
func ParseState(b []byte) ([]StateChange, error) {
	var out []StateChange
	r := &reader{b: b}
	for r.remaining() > 0 {
		t, err := r.byte1("tracker type")
		if err != nil {
			return out, err
		}
		data, err := r.lenencBytes("tracker data")
		if err != nil {
			return out, err
		}
		d := &reader{b: data}
		c := StateChange{Type: t}
		switch t {
		case TrackSystemVariables:
			name, err := d.lenencBytes("variable name")
			if err != nil {
				return out, err
			}
			value, err := d.lenencBytes("variable value")
			if err != nil {
				return out, err
			}
			c.Name, c.Value = string(name), string(value)
		case TrackStateChange:
			c.Value = string(data) // "1", not length-encoded
		case TrackSchema, TrackTrxCharacter:
			v, err := d.lenencBytes("tracker value")
			if err != nil {
				return out, err
			}
			c.Value = string(v)
			if t == TrackSchema {
				c.Name, c.Value = c.Value, ""
			}
		default:
			c.Value = string(data)
		}
		out = append(out, c)
	}
	return out, nil
}

// IsResultEnd reports whether a packet inside a result set is its
// terminator: an EOF packet, or under CLIENT_DEPRECATE_EOF an OK packet
// with the 0xFE header. A row whose first byte is 0xFE is a length-encoded
// string of 2^24 bytes or more, so its packet is never shorter than that.
func IsResultEnd(p []byte, deprecateEOF bool) bool {
	if len(p) == 0 || p[0] != mysql.EOF_HEADER {
		return false
	}
	if deprecateEOF {
		return len(p) < mysql.MaxPayloadLen
	}
	return len(p) < 9
}

// EndStatus decodes a result-set terminator: a 5-byte EOF packet, or an
// OK packet with the 0xFE header (at least 7 bytes).
func EndStatus(p []byte) (OK, bool) {
	if len(p) == 5 {
		return OK{Warnings: binary.LittleEndian.Uint16(p[1:3]), Status: binary.LittleEndian.Uint16(p[3:5])}, true
	}
	ok, err := ParseOK(p, true)
	return ok, err == nil
}

// PrepareOK is the first packet of a successful COM_STMT_PREPARE answer.
type PrepareOK struct {
	StmtID          uint32
	Columns, Params uint16
}

// ParsePrepareOK decodes the COM_STMT_PREPARE OK packet.
func ParsePrepareOK(p []byte) (PrepareOK, error) {
	if len(p) < 9 || p[0] != mysql.OK_HEADER {
		return PrepareOK{}, malformed("not a COM_STMT_PREPARE OK packet")
	}
	return PrepareOK{
		StmtID:  binary.LittleEndian.Uint32(p[1:5]),
		Columns: binary.LittleEndian.Uint16(p[5:7]),
		Params:  binary.LittleEndian.Uint16(p[7:9]),
	}, nil
}

// LenencInt decodes the length-encoded integer at the start of p (a
// result set's column count).
func LenencInt(p []byte) (uint64, int, error) {
	r := &reader{b: p}
	v, err := r.lenencInt("length-encoded integer")
	return v, r.pos, err
}

// TextRow decodes a text-protocol row of cols values; NULL is nil.
func TextRow(p []byte, cols int) ([]*string, error) {
	r := &reader{b: p}
	row := make([]*string, cols)
	for i := range row {
		if r.remaining() > 0 && r.b[r.pos] == 0xfb {
			r.pos++
			continue
		}
		v, err := r.lenencBytes("row value")
		if err != nil {
			return nil, err
		}
		s := string(v)
		row[i] = &s
	}
	return row, nil
}
