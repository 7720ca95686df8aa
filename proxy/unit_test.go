package proxy

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

func TestParseKill(t *testing.T) {
	for _, tc := range []struct {
		q     string
		words string
		id    uint64
		ok    bool
	}{
		{"KILL 1000000001", "KILL", 1000000001, true},
		{"KILL QUERY 1000000001", "KILL QUERY", 1000000001, true},
		{"  kill  connection 5 ; ", "kill connection", 5, true},
		{"KILL HARD QUERY 7", "KILL HARD QUERY", 7, true},
		{"KILL SOFT 7", "KILL SOFT", 7, true},
		{"KILL QUERY ID 7", "", 0, false},
		{"KILL USER bob", "", 0, false},
		{"KILL QUERY HARD 7", "", 0, false},
		{"KILLQUERY 7", "", 0, false},
		{"SELECT 1", "", 0, false},
		{"KILL", "", 0, false},
		{"KILL -1", "", 0, false},
	} {
		words, id, ok := parseKill([]byte(tc.q))
		if ok != tc.ok || id != tc.id || strings.Join(words, " ") != tc.words {
			t.Errorf("%q: got %q %d %v", tc.q, words, id, ok)
		}
	}
}

func TestCapabilities(t *testing.T) {
	adv := advertisedCaps(mariadb1011Caps)
	for _, c := range []uint32{mysql.CLIENT_QUERY_ATTRIBUTES, mysql.CLIENT_COMPRESS, mysql.CLIENT_ZSTD_COMPRESSION_ALGORITHM,
		wire.ClientMySQL, mysql.CLIENT_REMEMBER_OPTIONS, mysql.CLIENT_SSL_VERIFY_SERVER_CERT} {
		if adv&c != 0 {
			t.Errorf("advertised %v", wire.CapNames(c))
		}
	}
	if adv&mysql.CLIENT_SSL == 0 || adv&mysql.CLIENT_DEPRECATE_EOF == 0 || adv&mysql.CLIENT_LOCAL_FILES == 0 {
		t.Errorf("missing capabilities in %v", wire.CapNames(adv))
	}
	// A MySQL backend (bit 0 set) keeps bit 0, so clients send no MariaDB extensions.
	if advertisedCaps(mariadb1011Caps|wire.ClientMySQL)&wire.ClientMySQL == 0 {
		t.Error("bit 0 of a MySQL backend not mirrored")
	}
	g := &wire.Greeting{Caps: mariadb1011Caps &^ mysql.CLIENT_DEPRECATE_EOF, ExtCaps: wire.MariaDBProgress}
	client := negotiated(adv|wire.ClientMySQL, adv)
	if _, err := planBackendCaps(client, 0, false, false, g); err == nil || !strings.Contains(err.Error(), "CLIENT_DEPRECATE_EOF") {
		t.Fatalf("missing DEPRECATE_EOF not reported: %v", err)
	}
	g.Caps = mariadb1011Caps
	plan, err := planBackendCaps(client&^wire.ClientMySQL, wire.MariaDBCacheMetadata, true, true, g)
	if err == nil || !strings.Contains(err.Error(), "MARIADB_CLIENT_CACHE_METADATA") {
		t.Fatalf("missing extended capability not reported: %v %v", plan, err)
	}
	plan, err = planBackendCaps(client|mysql.CLIENT_SSL, 0, true, true, g)
	if err != nil || plan.caps&mysql.CLIENT_SSL != 0 || plan.caps&mysql.CLIENT_CONNECT_WITH_DB == 0 || plan.extCaps != 0 {
		t.Fatalf("plan %v, %v", wire.CapNames(plan.caps), err)
	}
}

func TestRoute(t *testing.T) {
	s := &Server{cfg: Config{Domain: "db.example.com"}}
	for _, tc := range []struct{ sni, user, project, role string }{
		{"", "shop.root", "shop", "root"},
		{"", "shop.a.b", "shop", "a.b"},
		{"", "root", "root", ""},
		{"shop.db.example.com", "root", "shop", "root"},
		{"SHOP.DB.EXAMPLE.COM", "shop.root", "shop", "root"},
		{"x.y.db.example.com", "shop.root", "shop", "root"}, // not one label: ignored
		{"other.example.com", "shop.root", "shop", "root"},
	} {
		ss := &session{s: s, sni: tc.sni}
		p, r := ss.route(tc.user)
		if p != tc.project || r != tc.role {
			t.Errorf("%+v: got %q %q", tc, p, r)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	err := Config{TLSCertFile: "x", HandshakeTimeout: -time.Second, MaxHandshakePacket: 10, Domain: ".x"}.Validate()
	for _, want := range []string{"tls_cert", "handshake_timeout", "max_handshake_packet", "domain"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	err = Config{AuthDelayMax: 20 * time.Second, AuthDelayDecay: -time.Second}.Validate()
	for _, want := range []string{"auth_delay_max (20s) must be below handshake_timeout", "auth_delay_decay"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if err := (Config{AuthDelayThreshold: -1, AuthDelayMax: time.Minute}).Validate(); err != nil {
		t.Errorf("a disabled delay needs no bound: %v", err)
	}
	if v := normalizeVersion("10.11.19-MariaDB"); v != "5.5.5-10.11.19-MariaDB" {
		t.Error(v)
	}
	if v := normalizeVersion("11.4.2-MariaDB"); v != "11.4.2-MariaDB" {
		t.Error(v)
	}
}

func TestCounterNames(t *testing.T) {
	seen := map[string]bool{}
	for k := range numCounters {
		n := k.String()
		if n == "" || seen[n] {
			t.Fatalf("counter %d name %q", k, n)
		}
		seen[n] = true
	}
	if !reflect.DeepEqual(len(seen), int(numCounters)) {
		t.Fatal("names")
	}
}

// TestScanSQL: the flags of statements that pin a session, in any case,
// after comments, and none for ordinary statements.
func TestScanSQL(t *testing.T) {
	for q, want := range map[string]sqlFlags{
		"select get_lock('a', 1)":                 flagNamedLock,
		"/* app */ SELECT Release_All_Locks()":    flagNamedLock,
		"select sql_calc_found_rows * from t":     flagCalcFound,
		"lock tables t read":                      flagLockTables,
		"create temporary table tmp (a int)":      flagCreateTemp,
		"SELECT user_id FROM orders WHERE id = 1": 0,
	} {
		if got, _ := scanSQL([]byte(q)); got != want {
			t.Errorf("%q: flags %b, want %b", q, got, want)
		}
	}
}
