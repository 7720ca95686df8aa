package proxy

import (
	"fmt"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// notCarryable are capabilities the proxy never advertises:
//   - compression (CLIENT_COMPRESS, zstd): the client->server relay reads
//     packet headers, which compression would hide; the proxy does not
//     terminate it, so it must not be negotiated;
//   - CLIENT_QUERY_ATTRIBUTES, CLIENT_OPTIONAL_RESULTSET_METADATA,
//     MULTI_FACTOR_AUTHENTICATION, CLIENT_CAPABILITY_EXTENSION: MySQL-only,
//     MariaDB reuses or ignores these bits;
//   - CLIENT_SSL_VERIFY_SERVER_CERT, CLIENT_REMEMBER_OPTIONS: client-side
//     flags that have no meaning on the wire;
//   - CLIENT_SSL is added separately: the proxy terminates TLS itself;
//   - CLIENT_MYSQL (bit 0) mirrors the backend: clear for MariaDB, so that
//     MariaDB clients send their extended capabilities.
const notCarryable = wire.ClientMySQL | mysql.CLIENT_COMPRESS | mysql.CLIENT_ZSTD_COMPRESSION_ALGORITHM |
	mysql.CLIENT_QUERY_ATTRIBUTES | mysql.CLIENT_OPTIONAL_RESULTSET_METADATA | mysql.MULTI_FACTOR_AUTHENTICATION |
	mysql.CLIENT_CAPABILITY_EXTENSION | mysql.CLIENT_SSL_VERIFY_SERVER_CERT | mysql.CLIENT_REMEMBER_OPTIONS |
	mysql.CLIENT_SSL

// refused are the capabilities a client is refused for asking although the
// greeting did not offer them. Any other capability we did not advertise is
// ignored, as MariaDB does (it keeps the client's capabilities AND its own):
// go-mysql, for one, always sets CLIENT_QUERY_ATTRIBUTES and only uses it
// when the server offered it. Compression is the exception, to be safe: a
// client that compresses anyway would change the framing under the relay,
// which reads packet headers, and the stream would be misread.
const refused = mysql.CLIENT_COMPRESS | mysql.CLIENT_ZSTD_COMPRESSION_ALGORITHM

// carryableExtCaps are the MariaDB extended capabilities the proxy passes
// through. They only change command-phase packets, which the relay copies
// as opaque bytes. COM_MULTI is left out: it would hide commands (KILL,
// COM_CHANGE_USER) inside one packet.
const carryableExtCaps = wire.MariaDBProgress | wire.MariaDBStmtBulkOperations |
	wire.MariaDBExtendedMetadata | wire.MariaDBCacheMetadata | wire.MariaDBBulkUnitResults

// authPhaseCaps only shape the handshake response, which the proxy rebuilds
// for the backend; the rest of a client's capabilities go through unchanged.
const authPhaseCaps = mysql.CLIENT_SSL | mysql.CLIENT_CONNECT_WITH_DB | mysql.CLIENT_CONNECT_ATTRS |
	mysql.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | mysql.CLIENT_PLUGIN_AUTH | mysql.CLIENT_SECURE_CONNECTION

// advertisedCaps is what the greeting announces for a backend with caps.
func advertisedCaps(backend uint32) uint32 {
	return backend&^notCarryable | backend&wire.ClientMySQL | mysql.CLIENT_SSL
}

// negotiated returns the client's effective capabilities: what it asked for
// among what we advertised. Bit 0 is the client's own choice (MySQL or
// MariaDB mode), so it is kept as sent.
func negotiated(client, advertised uint32) uint32 {
	return client & (advertised | wire.ClientMySQL)
}

// backendLogin holds the capabilities to send to a backend for a client.
type backendLogin struct {
	caps    uint32
	extCaps uint32
}

// planBackendCaps derives the backend handshake response's capabilities
// from the client's negotiated ones and checks the backend supports every
// capability that shapes the command phase. A mismatch is refused: the
// client would otherwise misread the backend's replies.
func planBackendCaps(client, clientExt uint32, hasDB, hasAttrs bool, g *wire.Greeting) (backendLogin, error) {
	// Session tracking is always on towards the backend: the relay reads
	// the session's state from OK packets, and strips it again for a
	// client that did not ask for it.
	c := client&^authPhaseCaps | mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION | mysql.CLIENT_PLUGIN_AUTH |
		mysql.CLIENT_SESSION_TRACK
	if hasDB {
		c |= mysql.CLIENT_CONNECT_WITH_DB
	}
	if hasAttrs && g.Caps&mysql.CLIENT_CONNECT_ATTRS != 0 {
		c |= mysql.CLIENT_CONNECT_ATTRS // attributes are informational: dropped if unsupported
	}
	if g.Caps&mysql.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
		c |= mysql.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
	}
	var missing []string
	missing = append(missing, wire.CapNames(c&^wire.ClientMySQL&^g.Caps)...)
	var ext uint32
	if client&wire.ClientMySQL == 0 {
		ext = clientExt & carryableExtCaps
		missing = append(missing, wire.ExtCapNames(ext&^g.ExtCaps)...)
	}
	if len(missing) > 0 {
		return backendLogin{}, fmt.Errorf("the backend does not support %s", strings.Join(missing, ", "))
	}
	return backendLogin{caps: c, extCaps: ext}, nil
}
