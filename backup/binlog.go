package backup

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Binlog is one closed binary log file of a compute, as archived. Its key
// carries everything a restore plans with, so that listing the target is
// enough to know the restorable window.
type Binlog struct {
	Name     string    `json:"name"`      // binlog.000007
	ClosedAt time.Time `json:"closed_at"` // its last write: every event in it is older
	SHA256   string    `json:"sha256"`
	Key      string    `json:"-"`
	Stored   int64     `json:"stored_bytes"` // compressed
}

// keyTime formats times in keys: sortable, and free of ':'.
const keyTime = "20060102T150405.000000000Z"

// binlogName is a binary log file's name as the compute's my.cnf makes it.
var binlogName = regexp.MustCompile(`^binlog\.[0-9]{6,}$`)

// BinlogPrefix is where a compute's binary logs of one timeline are kept.
// A timeline is one history of the data: a restore starts a new one, so
// that the files it writes never mix with those of the history it left.
func BinlogPrefix(projectID, computeID, timeline string) string {
	return fmt.Sprintf("binlogs/%s/%s/%s/", projectID, computeID, timeline)
}

func binlogKey(prefix string, b Binlog) string {
	return prefix + b.Name + "_" + b.ClosedAt.UTC().Format(keyTime) + "_" + b.SHA256 + ".zst"
}

func parseBinlogKey(prefix string, o Object) (Binlog, bool) {
	rest, ok := strings.CutPrefix(o.Key, prefix)
	if !ok {
		return Binlog{}, false
	}
	parts := strings.Split(strings.TrimSuffix(rest, ".zst"), "_")
	if len(parts) != 3 || !binlogName.MatchString(parts[0]) || len(parts[2]) != sha256.Size*2 {
		return Binlog{}, false
	}
	at, err := time.Parse(keyTime, parts[1])
	if err != nil {
		return Binlog{}, false
	}
	return Binlog{Name: parts[0], ClosedAt: at, SHA256: parts[2], Key: o.Key, Stored: o.Size}, true
}

// IndexedBinlogs lists the binary logs a datadir's binlog.index names,
// oldest first; none when the binary log was never on.
func IndexedBinlogs(dataDir string) ([]string, error) {
	f, err := os.Open(filepath.Join(dataDir, "binlog.index"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := filepath.Base(strings.TrimSpace(sc.Text()))
		if binlogName.MatchString(name) {
			names = append(names, name)
		}
	}
	return names, sc.Err()
}

// ShipBinlog stores the closed binary log at path under prefix. Its time
// is the file's last write.
func ShipBinlog(ctx context.Context, t Target, prefix, path string) (Binlog, error) {
	info, err := os.Stat(path)
	if err != nil {
		return Binlog{}, err
	}
	stage, sum, _, err := stageFile(path)
	if err != nil {
		return Binlog{}, fmt.Errorf("read binary log %s: %w", path, err)
	}
	defer closeStage(stage)
	b := Binlog{Name: filepath.Base(path), ClosedAt: info.ModTime().UTC(), SHA256: sum}
	b.Key = binlogKey(prefix, b)
	if b.Stored, err = putStage(ctx, t, b.Key, stage); err != nil {
		return Binlog{}, fmt.Errorf("store binary log %s: %w", b.Name, err)
	}
	return b, nil
}

// ListBinlogs lists the binary logs archived under prefix, by name. A file
// shipped twice (the daemon died before it knew) is listed once.
func ListBinlogs(ctx context.Context, t Target, prefix string) ([]Binlog, error) {
	objs, err := t.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []Binlog
	for _, o := range objs {
		b, ok := parseBinlogKey(prefix, o)
		if !ok {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Name == b.Name {
			continue
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// FetchBinlog writes an archived binary log to path, verifying its
// checksum: a damaged object is ErrCorrupt.
func FetchBinlog(ctx context.Context, t Target, b Binlog, path string) error {
	if err := fetchVerified(ctx, t, b.Key, b.SHA256, path); err != nil {
		return fmt.Errorf("binary log %s: %w", b.Name, err)
	}
	return nil
}

// Where a binary log file's header keeps its "in use" flag: after the
// 4-byte magic, the first event's header (timestamp 4, type 1, server id
// 4, size 4, next position 4) is followed by its 2-byte flags.
const (
	binlogFlagsAt = 4 + 4 + 1 + 4 + 4 + 4
	binlogInUse   = 0x1 // LOG_EVENT_BINLOG_IN_USE_F
)

// BinlogOpen reports whether the binary log at path is still open: the
// server sets the flag in its header when it opens the file and clears it
// when it closes it cleanly (a rotation or a shutdown). A file whose
// server crashed stays marked until the server's next start.
func BinlogOpen(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var h [binlogFlagsAt + 2]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return false, fmt.Errorf("binary log %s: header: %w", filepath.Base(path), err)
	}
	if string(h[:4]) != "\xfebin" {
		return false, fmt.Errorf("binary log %s is not a binary log", filepath.Base(path))
	}
	return binary.LittleEndian.Uint16(h[binlogFlagsAt:])&binlogInUse != 0, nil
}
