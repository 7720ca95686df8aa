package backup

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Replay applies the binary log files, in order, from position start of
// the first (0: its beginning), to the MariaDB server at addr
// ("unix:/path" or "host:port") as user, stopping before the first
// event at or after to (a zero to replays everything). The binary log's
// times have one-second precision: events in the second of to are not
// replayed.
func Replay(ctx context.Context, files []string, start uint64, to time.Time, addr, user, password string) error {
	if len(files) == 0 {
		return nil
	}
	binlogTool, err := tool("mariadb-binlog", "mysqlbinlog")
	if err != nil {
		return err
	}
	client, err := tool("mariadb", "mysql")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "serverlessd-replay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The password goes in a 0600 option file, never on a command line.
	cnf := filepath.Join(dir, "client.cnf")
	opts := fmt.Sprintf("[client]\nuser=%s\npassword=%s\n", user, password)
	if err := os.WriteFile(cnf, []byte(opts), 0o600); err != nil {
		return err
	}
	var args []string
	if start > 0 {
		args = append(args, "--start-position="+strconv.FormatUint(start, 10))
	}
	if !to.IsZero() {
		args = append(args, "--stop-datetime="+to.UTC().Format(time.DateTime))
	}
	args = append(args, files...)
	read := exec.CommandContext(ctx, binlogTool, args...)
	read.Env = append(os.Environ(), "TZ=UTC") // --stop-datetime is read in the local zone
	conn := append([]string{"--defaults-extra-file=" + cnf}, target(addr)...)
	// A row-based statement's events arrive as one BINLOG statement, as
	// large as the rows it changed: the server must take such a packet.
	raise := exec.CommandContext(ctx, client, append(conn, "-e", "SET GLOBAL max_allowed_packet = 1073741824")...)
	if out, err := raise.CombinedOutput(); err != nil {
		return fmt.Errorf("prepare the binary log replay: %s: %w: %s", client, err, lastLine(string(out)))
	}
	apply := exec.CommandContext(ctx, client, append(conn, "--binary-mode", "--max-allowed-packet=1G")...)
	var readErr, applyErr bytes.Buffer
	read.Stderr, apply.Stderr = &readErr, &applyErr
	pipe, err := read.StdoutPipe()
	if err != nil {
		return err
	}
	apply.Stdin = pipe
	if err := read.Start(); err != nil {
		return fmt.Errorf("start %s: %w", binlogTool, err)
	}
	if err := apply.Run(); err != nil {
		_, _ = io.Copy(io.Discard, pipe)
		_ = read.Wait()
		return fmt.Errorf("replay binary logs: %s: %w: %s", client, err, lastLine(applyErr.String()))
	}
	if err := read.Wait(); err != nil {
		return fmt.Errorf("read binary logs: %s: %w: %s", binlogTool, err, lastLine(readErr.String()))
	}
	return nil
}

// target turns a compute address into the client's connection options.
func target(addr string) []string {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return []string{"--socket=" + p}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return []string{"--host=" + addr}
	}
	return []string{"--host=" + host, "--port=" + port, "--protocol=TCP"}
}

// tool finds the first of names in PATH or /usr/bin.
func tool(names ...string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
		if p := filepath.Join("/usr/bin", n); isExec(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: install the mariadb-client package", names[0])
}

func isExec(p string) bool {
	info, err := os.Stat(p)
	return err == nil && info.Mode()&0o111 != 0
}

// lastLine is a tool's last line of output: its error, after the
// statement it echoes (a BINLOG statement can be megabytes).
func lastLine(out string) string {
	out = strings.TrimSpace(out)
	return tail(out[strings.LastIndexByte(out, '\n')+1:], 500)
}
