package backup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/store"
)

// hotDue reports whether a running compute is due a hot backup: its
// newest snapshot is Interval old, or it has none.
func (s *Service) hotDue(ctx context.Context, st *state, c *store.Compute) bool {
	s.mu.Lock()
	last, known, busy := st.lastSnap, st.snapsKnown, s.hotBusy
	s.mu.Unlock()
	if busy {
		return false
	}
	if !known {
		snaps, err := ListSnapshots(ctx, s.Target, c)
		if err != nil {
			return false // the target is down: the next look tries again
		}
		if n := len(snaps); n > 0 {
			last = snaps[n-1].TakenAt
		}
		s.mu.Lock()
		st.lastSnap, st.snapsKnown = last, true
		s.mu.Unlock()
	}
	return time.Since(last) >= s.Interval
}

// startHot takes a hot backup of c in the background, one at a time.
func (s *Service) startHot(st *state, c store.Compute) {
	s.mu.Lock()
	if s.hotBusy || s.ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	s.hotBusy = true
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		err := s.hotSnapshot(s.ctx, st, &c)
		s.mu.Lock()
		s.hotBusy = false
		if err != nil {
			st.lastSnap = time.Now().Add(min(time.Hour, s.Interval) - s.Interval) // retry within the hour
		}
		s.mu.Unlock()
		if err == nil || s.ctx.Err() != nil {
			return
		}
		switch runs, gone := s.active(c.ID); {
		case gone:
			s.forget(c.ID)
		case !runs:
			s.log(&c).Info("hot backup abandoned: the compute suspended, and its suspend's snapshot follows", "err", err)
		default:
			s.Metrics.failed()
			s.log(&c).Warn("hot backup failed: backups are behind; retrying", "err", err)
		}
	}()
}

// hotSnapshot copies a running compute's data with mariadb-backup into a
// staging folder, prepares it into a consistent datadir, and stores that
// as a snapshot, which records the binary log position it matches. It is
// stored like any other snapshot (by file, each content once), so that a
// restore has one way to read every snapshot.
func (s *Service) hotSnapshot(ctx context.Context, st *state, c *store.Compute) error {
	addr, cred, err := s.Computes.AdminAccess(ctx, c.ID)
	if err != nil {
		return err
	}
	if s.remote(c) {
		return s.hotRemote(ctx, st, c, addr)
	}
	dataDir, _ := s.DataDir(c)
	staging, err := s.Staging(c)
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	t0 := time.Now()
	dst := filepath.Join(staging, "data")
	pos, err := HotBackup(ctx, dataDir, dst, addr, cred)
	if err != nil {
		return fmt.Errorf("project %s: %w", c.ProjectID, err)
	}
	copied := time.Since(t0)
	st.snapMu.Lock()
	defer st.snapMu.Unlock()
	m, stats, err := Snapshot(ctx, s.Target, dst, st.prev)
	if err != nil {
		return err
	}
	if m.Timeline, err = Timeline(dataDir); err != nil {
		return err
	}
	m.Binlog, m.BinlogPos = pos.File, pos.Pos
	if err := s.save(ctx, st, c, m); err != nil {
		return err
	}
	s.log(c).Info("hot backup taken", "binlog", pos.File, "position", pos.Pos, "files", stats.Files,
		"stored_bytes", stats.BytesStored, "copy", copied, "duration", time.Since(t0))
	return nil
}

// HotBackup copies the running MariaDB server at addr, whose datadir is
// dataDir, into dst with mariadb-backup and prepares the copy: dst is then
// a datadir as if shut down cleanly at the returned binary log position.
func HotBackup(ctx context.Context, dataDir, dst, addr string, cred compute.Credentials) (compute.BinlogPos, error) {
	tool, err := tool("mariadb-backup", "mariabackup")
	if err != nil {
		return compute.BinlogPos{}, err
	}
	// Only this option file is read (--defaults-file), never the host's
	// my.cnf; the password stays off the command line.
	cnf := dst + ".cnf"
	opts := fmt.Sprintf("[mariadb-backup]\nuser=%s\npassword=%s\ndatadir=%s\n", cred.User, cred.Password, dataDir)
	for _, o := range target(addr) {
		opts += strings.TrimPrefix(o, "--") + "\n"
	}
	if err := os.WriteFile(cnf, []byte(opts), 0o600); err != nil {
		return compute.BinlogPos{}, err
	}
	defer os.Remove(cnf)
	for _, step := range [][]string{{"--backup"}, {"--prepare"}} {
		cmd := exec.CommandContext(ctx, tool, append([]string{"--defaults-file=" + cnf, "--target-dir=" + dst}, step...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return compute.BinlogPos{}, fmt.Errorf("mariadb-backup %s: %w: %s", step[0], err, tail(out.String(), 800))
		}
	}
	return readBinlogInfo(dst)
}

// readBinlogInfo reads the binary log position mariadb-backup recorded.
func readBinlogInfo(dir string) (compute.BinlogPos, error) {
	b, err := os.ReadFile(filepath.Join(dir, "xtrabackup_binlog_info"))
	if err != nil {
		return compute.BinlogPos{}, fmt.Errorf("mariadb-backup recorded no binary log position (is the binary log on?): %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 || !binlogName.MatchString(f[0]) {
		return compute.BinlogPos{}, fmt.Errorf("mariadb-backup's binary log position %q is unreadable", string(b))
	}
	pos, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return compute.BinlogPos{}, fmt.Errorf("mariadb-backup's binary log position %q is unreadable", string(b))
	}
	return compute.BinlogPos{File: f[0], Pos: pos}, nil
}

// tail returns the end of a tool's output, for an error message.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
