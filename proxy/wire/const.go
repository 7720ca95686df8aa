// Package wire holds the pieces of the MySQL/MariaDB client/server protocol
// that serverlessd's proxy speaks itself: packet framing with size limits,
// the connection-phase packets (greeting, handshake response, auth switch,
// OK/ERR) and the password hashes. It deliberately knows nothing about
// projects, computes or sockets beyond io.Reader/io.Writer.
//
// The constants follow the MySQL and MariaDB protocol documentation; they are
// defined here (rather than imported from go-mysql) because go-mysql's packet
// and mysql packages pull in github.com/pingcap/errors and
// github.com/klauspost/compress, and its packet.Conn neither bounds packet
// sizes nor lets the caller avoid read-ahead, both of which the proxy needs.
package wire

// Capability flags (the lower 32 bits, shared by MySQL and MariaDB).
const (
	// ClientMySQL is CLIENT_LONG_PASSWORD in MySQL. A MariaDB server clears it
	// in its greeting to announce that the 4 filler bytes carry MariaDB
	// extended capabilities; a MariaDB client clears it in its reply to send
	// its own.
	ClientMySQL                     uint32 = 1 << 0
	ClientFoundRows                 uint32 = 1 << 1
	ClientLongFlag                  uint32 = 1 << 2
	ClientConnectWithDB             uint32 = 1 << 3
	ClientNoSchema                  uint32 = 1 << 4
	ClientCompress                  uint32 = 1 << 5
	ClientODBC                      uint32 = 1 << 6
	ClientLocalFiles                uint32 = 1 << 7
	ClientIgnoreSpace               uint32 = 1 << 8
	ClientProtocol41                uint32 = 1 << 9
	ClientInteractive               uint32 = 1 << 10
	ClientSSL                       uint32 = 1 << 11
	ClientIgnoreSigpipe             uint32 = 1 << 12
	ClientTransactions              uint32 = 1 << 13
	ClientReserved                  uint32 = 1 << 14
	ClientSecureConnection          uint32 = 1 << 15
	ClientMultiStatements           uint32 = 1 << 16
	ClientMultiResults              uint32 = 1 << 17
	ClientPSMultiResults            uint32 = 1 << 18
	ClientPluginAuth                uint32 = 1 << 19
	ClientConnectAttrs              uint32 = 1 << 20
	ClientPluginAuthLenencData      uint32 = 1 << 21
	ClientCanHandleExpiredPasswords uint32 = 1 << 22
	ClientSessionTrack              uint32 = 1 << 23
	ClientDeprecateEOF              uint32 = 1 << 24
	ClientOptionalResultsetMetadata uint32 = 1 << 25
	ClientZstdCompression           uint32 = 1 << 26
	ClientQueryAttributes           uint32 = 1 << 27
	ClientMultiFactorAuth           uint32 = 1 << 28
	ClientCapabilityExtension       uint32 = 1 << 29
	ClientSSLVerifyServerCert       uint32 = 1 << 30
	ClientRememberOptions           uint32 = 1 << 31
)

// MariaDB extended capabilities (bits 32..63 in MariaDB's numbering, sent in
// the last 4 filler bytes only when ClientMySQL is clear).
const (
	MariaDBProgress           uint32 = 1 << 0
	MariaDBComMulti           uint32 = 1 << 1
	MariaDBStmtBulkOperations uint32 = 1 << 2
	MariaDBExtendedMetadata   uint32 = 1 << 3
	MariaDBCacheMetadata      uint32 = 1 << 4
	MariaDBBulkUnitResults    uint32 = 1 << 5
)

var capNames = [32]string{
	"CLIENT_MYSQL", "CLIENT_FOUND_ROWS", "CLIENT_LONG_FLAG", "CLIENT_CONNECT_WITH_DB",
	"CLIENT_NO_SCHEMA", "CLIENT_COMPRESS", "CLIENT_ODBC", "CLIENT_LOCAL_FILES",
	"CLIENT_IGNORE_SPACE", "CLIENT_PROTOCOL_41", "CLIENT_INTERACTIVE", "CLIENT_SSL",
	"CLIENT_IGNORE_SIGPIPE", "CLIENT_TRANSACTIONS", "CLIENT_RESERVED", "CLIENT_SECURE_CONNECTION",
	"CLIENT_MULTI_STATEMENTS", "CLIENT_MULTI_RESULTS", "CLIENT_PS_MULTI_RESULTS", "CLIENT_PLUGIN_AUTH",
	"CLIENT_CONNECT_ATTRS", "CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA", "CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS", "CLIENT_SESSION_TRACK",
	"CLIENT_DEPRECATE_EOF", "CLIENT_OPTIONAL_RESULTSET_METADATA", "CLIENT_ZSTD_COMPRESSION_ALGORITHM", "CLIENT_QUERY_ATTRIBUTES",
	"MULTI_FACTOR_AUTHENTICATION", "CLIENT_CAPABILITY_EXTENSION", "CLIENT_SSL_VERIFY_SERVER_CERT", "CLIENT_REMEMBER_OPTIONS",
}

var extCapNames = [...]string{
	"MARIADB_CLIENT_PROGRESS", "MARIADB_CLIENT_COM_MULTI", "MARIADB_CLIENT_STMT_BULK_OPERATIONS",
	"MARIADB_CLIENT_EXTENDED_METADATA", "MARIADB_CLIENT_CACHE_METADATA", "MARIADB_CLIENT_BULK_UNIT_RESULTS",
}

// CapNames lists the names of the capability bits set in caps.
func CapNames(caps uint32) []string {
	var out []string
	for i := range 32 {
		if caps&(1<<i) != 0 {
			out = append(out, capNames[i])
		}
	}
	return out
}

// ExtCapNames lists the names of the MariaDB extended capability bits set in ext.
func ExtCapNames(ext uint32) []string {
	var out []string
	for i := range 32 {
		if ext&(1<<i) == 0 {
			continue
		}
		if i < len(extCapNames) {
			out = append(out, extCapNames[i])
		} else {
			out = append(out, "MARIADB_CLIENT_BIT_"+itoa(32+i))
		}
	}
	return out
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for ; i > 0; i /= 10 {
		n--
		b[n] = byte('0' + i%10)
	}
	return string(b[n:])
}

// Commands the proxy looks at in the client->server direction.
const (
	ComQuit            byte = 0x01
	ComInitDB          byte = 0x02
	ComQuery           byte = 0x03
	ComProcessKill     byte = 0x0c
	ComPing            byte = 0x0e
	ComChangeUser      byte = 0x11
	ComResetConnection byte = 0x1f
)

// First bytes of server packets in the connection phase.
const (
	OKHeader         byte = 0x00
	AuthMoreHeader   byte = 0x01
	LocalInfileByte  byte = 0xfb
	AuthSwitchHeader byte = 0xfe
	ErrHeader        byte = 0xff
)

// caching_sha2_password exchange bytes.
const (
	CachingSha2FastAuthOK      byte = 0x03
	CachingSha2PerformFullAuth byte = 0x04
	CachingSha2RequestPubKey   byte = 0x02
)

// Authentication plugin names.
const (
	PluginNative      = "mysql_native_password"
	PluginCachingSha2 = "caching_sha2_password"
)

// Server error codes the proxy sends itself.
const (
	ErConCount             uint16 = 1040
	ErHandshake            uint16 = 1043
	ErAccessDenied         uint16 = 1045
	ErServerShutdown       uint16 = 1053
	ErNoSuchThread         uint16 = 1094
	ErUnknown              uint16 = 1105
	ErHostIsBlocked        uint16 = 1129
	ErNetPacketTooLarge    uint16 = 1153
	ErNotSupportedYet      uint16 = 1235
	ErNotSupportedAuthMode uint16 = 1251
	ErQueryInterrupted     uint16 = 1317
	// ErSecureTransportRequired is MySQL's ER_SECURE_TRANSPORT_REQUIRED;
	// MariaDB has no dedicated code, and clients print the message anyway.
	ErSecureTransportRequired uint16 = 3159
)

// MaxPayload is the largest payload of a single frame; a payload of exactly
// this size is continued in the next frame.
const MaxPayload = 1<<24 - 1
