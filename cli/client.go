package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/serverlessd/serverlessd/config"
)

// client talks to a running daemon's HTTP API.
type client struct {
	base   string
	token  string
	output string
	http   *http.Client
	out    io.Writer
}

// newClient resolves the API URL and token: flags, then SERVERLESSD_API and
// SERVERLESSD_TOKEN, then the config file (api.listen, api.tokens[0]).
func (g *globals) newClient(out io.Writer) (*client, error) {
	if g.output != "table" && g.output != "json" {
		return nil, fmt.Errorf("--output must be table or json, got %q", g.output)
	}
	base, token := g.api, g.token
	if base == "" {
		base = os.Getenv("SERVERLESSD_API")
	}
	if token == "" {
		token = os.Getenv("SERVERLESSD_TOKEN")
	}
	if base == "" || token == "" {
		cfg, err := config.Load(g.configPath, nil, nil)
		if err != nil {
			return nil, err
		}
		if base == "" {
			base = cfg.API.Listen
		}
		if token == "" && len(cfg.API.Tokens) > 0 {
			token = cfg.API.Tokens[0]
		}
	}
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &client{
		base: strings.TrimRight(base, "/"), token: token, output: g.output,
		http: &http.Client{Timeout: 5 * time.Minute}, out: out,
	}, nil
}

// do sends a request and decodes a JSON answer into out (if not nil). API
// errors come back as Go errors carrying the API's message.
func (c *client) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the serverlessd API at %s: %w (is `serverlessd serve` running? set --api)", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			return fmt.Errorf("%s (%s, HTTP %d)", e.Error.Message, e.Error.Code, resp.StatusCode)
		}
		return fmt.Errorf("HTTP %d from %s %s", resp.StatusCode, method, path)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// print writes v as indented JSON with -o json, else calls table.
func (c *client) print(v any, table func(w *tabwriter.Writer)) error {
	if c.output == "json" {
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}
