package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	yaml := "data_dir: /from/file\napi:\n  listen: 127.0.0.1:9000\nproxy:\n  listen: 127.0.0.1:9001\nscheduler:\n  interval: 5s\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SERVERLESSD_API_LISTEN", "127.0.0.1:9100")
	t.Setenv("SERVERLESSD_PROXY_LISTEN", "127.0.0.1:9101")
	t.Setenv("SERVERLESSD_API_TOKENS", "aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("proxy-listen", "", "")
	fs.String("data-dir", "", "")
	if err := fs.Parse([]string{"--proxy-listen", "127.0.0.1:9201"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file, fs, map[string]string{"proxy.listen": "proxy-listen", "data_dir": "data-dir"})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"file over default", c.DataDir, "/from/file"},
		{"env over file", c.API.Listen, "127.0.0.1:9100"},
		{"flag over env", c.Proxy.Listen, "127.0.0.1:9201"},
		{"default kept", c.Store.Driver, "sqlite"},
		{"tokens from env", strings.Join(c.API.Tokens, ","), "aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	if c.Scheduler.Interval != 5*time.Second {
		t.Errorf("interval: got %s", c.Scheduler.Interval)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", "/xdg")
	c, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantDir := "/xdg/serverlessd"
	if os.Geteuid() == 0 {
		wantDir = "/var/lib/serverlessd"
	}
	if c.DataDir != wantDir || c.API.Listen != "127.0.0.1:8080" || c.Proxy.Listen != "127.0.0.1:3306" ||
		c.Store.Driver != "sqlite" || c.Compute.Driver != "local" || c.Scheduler.Interval != 30*time.Second {
		t.Fatalf("unexpected defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("api:\n  lisen: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file, nil, nil); err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Fatalf("want an error naming the unknown key, got %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"public api without token", func(c *Config) { c.API.Listen = "0.0.0.0:8080" }, "api.tokens"},
		{"short token", func(c *Config) { c.API.Tokens = []string{"short"} }, "api.tokens[0]"},
		{"bad listen", func(c *Config) { c.Proxy.Listen = "nope" }, "proxy.listen"},
		{"bad store", func(c *Config) { c.Store.Driver = "mysql" }, "store.driver"},
		{"postgres without dsn", func(c *Config) { c.Store.Driver = "postgres" }, "store.dsn"},
		{"bad compute", func(c *Config) { c.Compute.Driver = "docker" }, "compute.driver"},
		{"bad level", func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{"bad format", func(c *Config) { c.Log.Format = "xml" }, "log.format"},
		{"tiny interval", func(c *Config) { c.Scheduler.Interval = time.Millisecond }, "scheduler.interval"},
		{"cert without key", func(c *Config) { c.Proxy.TLSCert = "/x" }, "proxy.tls_cert"},
		{"zero per-source cap", func(c *Config) { c.Proxy.MaxConnectionsPerSource = 0 }, "proxy.max_connections_per_source"},
		{"zero per-project cap", func(c *Config) { c.Proxy.MaxConnectionsPerProject = 0 }, "proxy.max_connections_per_project"},
		{"zero delay threshold", func(c *Config) { c.Proxy.AuthDelayThreshold = 0 }, "proxy.auth_delay_threshold"},
		{"delay past the handshake", func(c *Config) { c.Proxy.AuthDelayMax = c.Proxy.HandshakeTimeout }, "proxy.auth_delay_max"},
		{"no decay", func(c *Config) { c.Proxy.AuthDelayDecay = 0 }, "proxy.auth_delay_decay"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want error naming %s, got %v", tt.want, err)
			}
		})
	}
	c := Default()
	c.Store.Driver, c.Log.Format = "x", "y"
	if n := strings.Count(c.Validate().Error(), "\n") + 1; n != 2 {
		t.Errorf("want one line per bad value (2), got %d", n)
	}
}

// TestExampleMatchesDefaults keeps config.example.yaml honest: loading it
// must give exactly the defaults, so every documented default is the real one.
func TestExampleMatchesDefaults(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", "")
	c, err := Load("../config.example.yaml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	c.NodeName = d.NodeName // the example leaves node_name commented out
	if got, want := fmt.Sprintf("%+v", c), fmt.Sprintf("%+v", d); got != want {
		t.Fatalf("config.example.yaml differs from the defaults:\n got %s\nwant %s", got, want)
	}
}
