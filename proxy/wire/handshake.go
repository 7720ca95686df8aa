package wire

import (
	"encoding/binary"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// Greeting is the server's Initial Handshake Packet (protocol version 10).
// Ours: go-mysql reads and writes it only inside its client and server
// Conn types, and without MariaDB's extended capabilities.
type Greeting struct {
	ServerVersion string
	ConnID        uint32
	Nonce         []byte // NonceLen bytes, none of them NUL
	Caps          uint32
	ExtCaps       uint32 // MariaDB extended capabilities; sent only when Caps&ClientMySQL == 0
	Charset       byte
	Status        uint16
	AuthPlugin    string
}

// Marshal encodes the greeting payload.
func (g *Greeting) Marshal() []byte {
	b := make([]byte, 0, 64+len(g.ServerVersion)+len(g.AuthPlugin))
	b = append(b, mysql.ClassicProtocolVersion)
	b = append(b, g.ServerVersion...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint32(b, g.ConnID)
	b = append(b, g.Nonce[:8]...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(g.Caps))
	b = append(b, g.Charset)
	b = binary.LittleEndian.AppendUint16(b, g.Status)
	b = binary.LittleEndian.AppendUint16(b, uint16(g.Caps>>16))
	b = append(b, byte(len(g.Nonce)+1))
	b = append(b, 0, 0, 0, 0, 0, 0)
	if g.Caps&ClientMySQL == 0 {
		b = binary.LittleEndian.AppendUint32(b, g.ExtCaps)
	} else {
		b = append(b, 0, 0, 0, 0)
	}
	b = append(b, g.Nonce[8:]...)
	b = append(b, 0)
	b = append(b, g.AuthPlugin...)
	return append(b, 0)
}

// ParseGreeting decodes a server greeting. An ERR packet (a server refusing
// the connection outright) is returned as a *mysql.MyError.
func ParseGreeting(p []byte) (*Greeting, error) {
	if len(p) > 0 && p[0] == mysql.ERR_HEADER {
		e, err := ParseErr(p)
		if err != nil {
			return nil, err
		}
		return nil, e
	}
	r := &reader{b: p}
	ver, err := r.byte1("protocol version")
	if err != nil {
		return nil, err
	}
	if ver != mysql.ClassicProtocolVersion {
		return nil, malformed("protocol version is not 10")
	}
	g := &Greeting{}
	if g.ServerVersion, err = r.nulString("server version"); err != nil {
		return nil, err
	}
	if g.ConnID, err = r.uint32("connection id"); err != nil {
		return nil, err
	}
	part1, err := r.bytes(9, "nonce")
	if err != nil {
		return nil, err
	}
	g.Nonce = append([]byte(nil), part1[:8]...)
	lo, err := r.uint16("capabilities")
	if err != nil {
		return nil, err
	}
	g.Caps = uint32(lo)
	if r.remaining() == 0 {
		return g, nil
	}
	return g, g.parseTail(r)
}

// parseTail decodes the part of the greeting after the lower capabilities.
func (g *Greeting) parseTail(r *reader) error {
	var err error
	if g.Charset, err = r.byte1("charset"); err != nil {
		return err
	}
	if g.Status, err = r.uint16("status"); err != nil {
		return err
	}
	hi, err := r.uint16("capabilities")
	if err != nil {
		return err
	}
	g.Caps |= uint32(hi) << 16
	authLen, err := r.byte1("auth data length")
	if err != nil {
		return err
	}
	if _, err = r.bytes(6, "reserved"); err != nil {
		return err
	}
	if g.ExtCaps, err = r.uint32("extended capabilities"); err != nil {
		return err
	}
	if g.Caps&ClientMySQL != 0 {
		g.ExtCaps = 0
	}
	if g.Caps&mysql.CLIENT_SECURE_CONNECTION != 0 {
		n := max(13, int(authLen)-8)
		part2, err := r.bytes(n, "nonce")
		if err != nil {
			return err
		}
		if part2[len(part2)-1] == 0 {
			part2 = part2[:len(part2)-1]
		}
		g.Nonce = append(g.Nonce, part2...)
	}
	if g.Caps&mysql.CLIENT_PLUGIN_AUTH != 0 {
		g.AuthPlugin = r.nulStringOrEOF()
	}
	return nil
}

// HandshakeResponse is the client's HandshakeResponse41, or an SSLRequest
// (its first 32 bytes alone, with mysql.CLIENT_SSL set). Ours: go-mysql parses
// it in unexported server.Conn methods that read from their own packet.Conn.
type HandshakeResponse struct {
	Caps         uint32
	ExtCaps      uint32 // only meaningful when Caps&ClientMySQL == 0
	MaxPacket    uint32
	Charset      byte
	SSLRequest   bool
	User         string
	AuthResponse []byte
	Database     string
	AuthPlugin   string
	// Attrs is the encoded connection attributes (key/value pairs of
	// length-encoded strings) without their total-length prefix. HasAttrs
	// tells an empty set from an absent one.
	Attrs    []byte
	HasAttrs bool
}

// ParseHandshakeResponse decodes a client's reply to the greeting. Only the
// 4.1 protocol is accepted: every client of the last twenty years speaks it.
// It never panics on arbitrary input (see the fuzz test).
func ParseHandshakeResponse(p []byte) (*HandshakeResponse, error) {
	r := &reader{b: p}
	h := &HandshakeResponse{}
	var err error
	if h.Caps, err = r.uint32("capabilities"); err != nil {
		return nil, err
	}
	if h.Caps&mysql.CLIENT_PROTOCOL_41 == 0 {
		return nil, malformed("pre-4.1 handshake response")
	}
	if h.MaxPacket, err = r.uint32("max packet size"); err != nil {
		return nil, err
	}
	if h.Charset, err = r.byte1("charset"); err != nil {
		return nil, err
	}
	filler, err := r.bytes(23, "filler")
	if err != nil {
		return nil, err
	}
	if h.Caps&ClientMySQL == 0 {
		h.ExtCaps = binary.LittleEndian.Uint32(filler[19:])
	}
	if r.remaining() == 0 && h.Caps&mysql.CLIENT_SSL != 0 {
		h.SSLRequest = true
		return h, nil
	}
	return h, h.parseBody(r)
}

// parseBody decodes the fields after the fixed 32-byte prefix.
func (h *HandshakeResponse) parseBody(r *reader) error {
	var err error
	if h.User, err = r.nulString("user"); err != nil {
		return err
	}
	if h.AuthResponse, err = readAuthResponse(r, h.Caps); err != nil {
		return err
	}
	if h.Caps&mysql.CLIENT_CONNECT_WITH_DB != 0 && r.remaining() > 0 {
		h.Database = r.nulStringOrEOF()
	}
	if h.Caps&mysql.CLIENT_PLUGIN_AUTH != 0 && r.remaining() > 0 {
		h.AuthPlugin = r.nulStringOrEOF()
	}
	if h.Caps&mysql.CLIENT_CONNECT_ATTRS != 0 && r.remaining() > 0 {
		if h.Attrs, err = readAttrs(r); err != nil {
			return err
		}
		h.HasAttrs = true
	}
	return nil
}

func readAuthResponse(r *reader, caps uint32) ([]byte, error) {
	switch {
	case caps&mysql.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0:
		return r.lenencBytes("auth response")
	case caps&mysql.CLIENT_SECURE_CONNECTION != 0:
		n, err := r.byte1("auth response length")
		if err != nil {
			return nil, err
		}
		return r.bytes(int(n), "auth response")
	default:
		s, err := r.nulString("auth response")
		return []byte(s), err
	}
}

// readAttrs reads the connection attributes and checks that they are well
// formed key/value pairs, so the backend never sees garbage from us.
func readAttrs(r *reader) ([]byte, error) {
	raw, err := r.lenencBytes("connection attributes")
	if err != nil {
		return nil, err
	}
	ar := &reader{b: raw}
	for ar.remaining() > 0 {
		if _, err := ar.lenencBytes("attribute key"); err != nil {
			return nil, err
		}
		if _, err := ar.lenencBytes("attribute value"); err != nil {
			return nil, err
		}
	}
	return raw, nil
}

// Marshal encodes the response. Fields are written according to h.Caps, so
// the caller sets the flags that match the fields it filled in.
func (h *HandshakeResponse) Marshal() []byte {
	b := make([]byte, 0, 64+len(h.User)+len(h.AuthResponse)+len(h.Database)+len(h.Attrs))
	b = binary.LittleEndian.AppendUint32(b, h.Caps)
	b = binary.LittleEndian.AppendUint32(b, h.MaxPacket)
	b = append(b, h.Charset)
	b = append(b, make([]byte, 19)...)
	if h.Caps&ClientMySQL == 0 {
		b = binary.LittleEndian.AppendUint32(b, h.ExtCaps)
	} else {
		b = append(b, 0, 0, 0, 0)
	}
	if h.SSLRequest {
		return b
	}
	b = append(b, h.User...)
	b = append(b, 0)
	b = appendAuthResponse(b, h.Caps, h.AuthResponse)
	if h.Caps&mysql.CLIENT_CONNECT_WITH_DB != 0 {
		b = append(b, h.Database...)
		b = append(b, 0)
	}
	if h.Caps&mysql.CLIENT_PLUGIN_AUTH != 0 {
		b = append(b, h.AuthPlugin...)
		b = append(b, 0)
	}
	if h.Caps&mysql.CLIENT_CONNECT_ATTRS != 0 {
		b = mysql.AppendLengthEncodedInteger(b, uint64(len(h.Attrs)))
		b = append(b, h.Attrs...)
	}
	return b
}

func appendAuthResponse(b []byte, caps uint32, auth []byte) []byte {
	switch {
	case caps&mysql.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0:
		b = mysql.AppendLengthEncodedInteger(b, uint64(len(auth)))
		return append(b, auth...)
	case caps&mysql.CLIENT_SECURE_CONNECTION != 0:
		return append(append(b, byte(len(auth))), auth...)
	default:
		return append(append(b, auth...), 0)
	}
}

// AuthSwitchPayload builds an AuthSwitchRequest, whose first byte is 0xfe
// (go-mysql's EOF_HEADER). The native plugin's data is the nonce followed by
// a NUL, as MariaDB sends it.
func AuthSwitchPayload(plugin string, data []byte) []byte {
	b := make([]byte, 0, 3+len(plugin)+len(data))
	b = append(b, mysql.EOF_HEADER)
	b = append(b, plugin...)
	b = append(b, 0)
	b = append(b, data...)
	return append(b, 0)
}

// ParseAuthSwitch decodes an AuthSwitchRequest, dropping the data's NUL.
// Ours, like AuthSwitchPayload: go-mysql handles auth switches inside its Conns.
func ParseAuthSwitch(p []byte) (plugin string, data []byte, err error) {
	if len(p) < 2 || p[0] != mysql.EOF_HEADER {
		return "", nil, malformed("not an auth switch request")
	}
	r := &reader{b: p, pos: 1}
	if plugin, err = r.nulString("plugin name"); err != nil {
		return "", nil, err
	}
	data = p[r.pos:]
	if len(data) > 0 && data[len(data)-1] == 0 {
		data = data[:len(data)-1]
	}
	return plugin, data, nil
}

// ChangeUser is a COM_CHANGE_USER command. Ours: go-mysql neither sends nor
// parses COM_CHANGE_USER.
type ChangeUser struct {
	User         string
	AuthResponse []byte
	Database     string
	Charset      uint16
	HasCharset   bool
	AuthPlugin   string
	HasPlugin    bool
	Attrs        []byte
	HasAttrs     bool
}

// ParseChangeUser decodes a COM_CHANGE_USER payload (command byte
// included) sent on a connection that negotiated caps.
func ParseChangeUser(p []byte, caps uint32) (*ChangeUser, error) {
	if len(p) == 0 || p[0] != mysql.COM_CHANGE_USER {
		return nil, malformed("not COM_CHANGE_USER")
	}
	r := &reader{b: p, pos: 1}
	c := &ChangeUser{}
	var err error
	if c.User, err = r.nulString("user"); err != nil {
		return nil, err
	}
	// COM_CHANGE_USER uses a 1-byte length even with the lenenc capability.
	if c.AuthResponse, err = readAuthResponse(r, caps&^mysql.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA); err != nil {
		return nil, err
	}
	if r.remaining() > 0 {
		c.Database = r.nulStringOrEOF()
	}
	return c, c.parseTail(r, caps)
}

func (c *ChangeUser) parseTail(r *reader, caps uint32) error {
	var err error
	if r.remaining() >= 2 {
		if c.Charset, err = r.uint16("charset"); err != nil {
			return err
		}
		c.HasCharset = true
	}
	if caps&mysql.CLIENT_PLUGIN_AUTH != 0 && r.remaining() > 0 {
		c.AuthPlugin = r.nulStringOrEOF()
		c.HasPlugin = true
	}
	if caps&mysql.CLIENT_CONNECT_ATTRS != 0 && r.remaining() > 0 {
		if c.Attrs, err = readAttrs(r); err != nil {
			return err
		}
		c.HasAttrs = true
	}
	return nil
}

// Marshal encodes the command for a connection that negotiated caps.
func (c *ChangeUser) Marshal(caps uint32) []byte {
	b := make([]byte, 0, 64+len(c.User)+len(c.Database)+len(c.Attrs))
	b = append(b, mysql.COM_CHANGE_USER)
	b = append(b, c.User...)
	b = append(b, 0)
	b = appendAuthResponse(b, caps&^mysql.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, c.AuthResponse)
	b = append(b, c.Database...)
	b = append(b, 0)
	if !c.HasCharset {
		return b
	}
	b = binary.LittleEndian.AppendUint16(b, c.Charset)
	if caps&mysql.CLIENT_PLUGIN_AUTH != 0 {
		b = append(b, c.AuthPlugin...)
		b = append(b, 0)
	}
	if caps&mysql.CLIENT_CONNECT_ATTRS != 0 && c.HasAttrs {
		b = mysql.AppendLengthEncodedInteger(b, uint64(len(c.Attrs)))
		b = append(b, c.Attrs...)
	}
	return b
}
