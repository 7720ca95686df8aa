package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/serverlessd/serverlessd/store"
)

// restoreInPlace is a point-in-time restore run by an agent on the stopped
// compute's volume: the current data is kept as a snapshot, then
// restoreFrom replaces it.
func restoreInPlace(ctx context.Context, t Target, dataDir string, c *store.Compute, to time.Time, log *slog.Logger) (Result, error) {
	t0 := time.Now()
	switch _, err := backUpStopped(ctx, t, dataDir, c, false); {
	case errors.Is(err, errNoDatadir):
		log.Warn("the compute has no datadir left to keep; restoring from the backups alone")
	case err != nil:
		return Result{}, fmt.Errorf("keep the current data of project %s before the restore: %w", c.ProjectID, err)
	default:
		log.Info("current data kept as a snapshot before the restore", "duration", time.Since(t0))
	}
	return restoreFrom(ctx, t, dataDir, c, c, to, log)
}

// restoreFrom makes dataDir, compute c's, what from's backups hold at to:
// the plan's snapshot is restored beside the datadir and its binary logs
// replayed into it by a private mariadbd (the daemon, on Kubernetes, has
// neither the tools nor a route to the compute), and the result is
// swapped in at once. The data starts a new timeline of c whose base is
// the plan's snapshot, as a restore in the daemon does.
func restoreFrom(ctx context.Context, t Target, dataDir string, c, from *store.Compute, to time.Time, log *slog.Logger) (Result, error) {
	t0 := time.Now()
	plan, err := PlanRestore(ctx, t, from, to)
	if err != nil {
		return Result{}, err
	}
	stage := dataDir + ".restore" // on the volume: the swap is a rename
	if err := os.RemoveAll(stage); err != nil {
		return Result{}, err
	}
	// Only passed through, by the private mariadbd's user, to the datadir.
	if err := os.Mkdir(stage, 0o711); err != nil {
		return Result{}, err
	}
	if err := os.Chmod(stage, 0o711); err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(stage)
	files, err := fetchPlan(ctx, t, plan, stage)
	if err != nil {
		return Result{}, fmt.Errorf("project %s: %w", from.ProjectID, err)
	}
	restored := filepath.Join(stage, "data")
	if err := replayOffline(ctx, restored, files, plan.StartPos, plan.To); err != nil {
		return Result{}, fmt.Errorf("project %s: %w", from.ProjectID, err)
	}
	if err := exchange(restored, dataDir); err != nil {
		return Result{}, fmt.Errorf("swap the restored datadir in: %w", err)
	}
	// At once, before the old datadir (now in stage) is removed: the
	// restored data must not ship onto the old history.
	tl, err := NewTimeline(dataDir)
	if err != nil {
		return Result{}, err
	}
	if err := saveSnapshot(ctx, t, c, baseOf(plan.Snapshot, tl)); err != nil {
		return Result{}, err
	}
	log.Info("restored", "from_project", from.ProjectID, "taken_at", plan.Snapshot.TakenAt, "binlogs", len(files),
		"to", plan.To, "duration", time.Since(t0))
	return Result{Timeline: tl, Replayed: len(files)}, nil
}

// fetchPlan restores the plan's snapshot into stage/data and its binary
// logs beside it, and returns their paths in order.
func fetchPlan(ctx context.Context, t Target, plan *Plan, stage string) ([]string, error) {
	if err := Restore(ctx, t, plan.Snapshot, filepath.Join(stage, "data")); err != nil {
		return nil, err
	}
	files := make([]string, len(plan.Binlogs))
	for i, b := range plan.Binlogs {
		files[i] = filepath.Join(stage, b.Name)
		if err := FetchBinlog(ctx, t, b, files[i]); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// baseOf is the manifest that starts timeline tl from the restored
// snapshot m: the replay and all after it are in tl's binary logs, from
// the one after those m holds (a hot backup holds none).
func baseOf(m *Manifest, tl string) *Manifest {
	base := *m
	base.TakenAt, base.Timeline = time.Now().UTC(), tl
	base.Binlog, base.BinlogPos = newestBinlog(base.Files), 0
	return &base
}

// replayOffline replays binary log files into the datadir dir with a
// mariadbd of its own, on a socket only, and shuts it down cleanly. The
// server logs the replay in dir's binary log, as the compute would.
func replayOffline(ctx context.Context, dir string, files []string, start uint64, to time.Time) error {
	if len(files) == 0 {
		return nil
	}
	server, err := tool("mariadbd", "/usr/sbin/mariadbd")
	if err != nil {
		return err
	}
	run, err := os.MkdirTemp("", "serverlessd-replay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(run)
	sock := filepath.Join(run, "mysqld.sock")
	cmd := exec.Command(server, replayServerArgs(dir, run, sock)...)
	// Nothing of the agent's environment (the target's credentials).
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "TMPDIR=" + run}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := runAsOwner(cmd, dir, run); err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mariadbd for the replay: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	err = waitSocket(ctx, sock, done)
	if err == nil {
		err = Replay(ctx, files, start, to, "unix:"+sock, "root", "")
	}
	if serr := stopServer(cmd, done); err == nil {
		err = serr
	}
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(run, "error.log"))
		return fmt.Errorf("%w (mariadbd's log: %s)", err, tail(stderr.String()+string(log), 800))
	}
	return nil
}

// replayServerArgs are the private mariadbd's options: no network, no
// accounts, no files outside its scratch folder, the binary log on as the
// compute has it.
func replayServerArgs(dir, run, sock string) []string {
	args := []string{"--no-defaults", "--datadir=" + dir, "--socket=" + sock,
		"--pid-file=" + filepath.Join(run, "mysqld.pid"), "--log-error=" + filepath.Join(run, "error.log"),
		"--tmpdir=" + run, "--secure-file-priv=" + run, "--skip-networking", "--skip-grant-tables",
		"--log-bin=binlog", "--binlog-format=ROW", "--server-id=1", "--max-binlog-size=64M",
		"--innodb-buffer-pool-size=128M", "--performance-schema=OFF"}
	return args
}

// waitSocket waits until a server answers on the unix socket sock, or
// exits (done).
func waitSocket(ctx context.Context, sock string, done <-chan error) error {
	deadline := time.Now().Add(5 * time.Minute) // InnoDB recovery of a big datadir
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-done:
			return fmt.Errorf("mariadbd for the replay exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("mariadbd for the replay did not open its socket within 5 minutes")
}

// stopServer shuts the replay's mariadbd down cleanly: SIGTERM, then its
// exit (InnoDB flushed), killing it past a bound.
func stopServer(cmd *exec.Cmd, done <-chan error) error {
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return nil // exited already
	}
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		return errors.New("mariadbd for the replay did not shut down within 10 minutes")
	}
}
