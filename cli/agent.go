package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/serverlessd/serverlessd/backup"
	"github.com/serverlessd/serverlessd/compute"
	"github.com/serverlessd/serverlessd/compute/mariadb"
)

// The agent's environment, set by the Kubernetes driver on its Pod.
const (
	envAgentJob    = "SERVERLESSD_AGENT_JOB"    // the job, as JSON
	envAgentResult = "SERVERLESSD_AGENT_RESULT" // where the report goes
	envDatadir     = "SERVERLESSD_DATADIR"
	envAdminPass   = "SERVERLESSD_ADMIN_PASSWORD" // for a hot backup
	envS3Endpoint  = "SERVERLESSD_BACKUP_S3_ENDPOINT"
	envS3Bucket    = "SERVERLESSD_BACKUP_S3_BUCKET"
	envS3Prefix    = "SERVERLESSD_BACKUP_S3_PREFIX"
	envS3Region    = "SERVERLESSD_BACKUP_S3_REGION"
	// defaultResult is the container's termination message, which the
	// driver reads from the Pod's status.
	defaultResult = "/dev/termination-log"
)

// newAgent is the backup agent the daemon runs where a compute's volume is
// mounted (a Pod on Kubernetes): not a command for people.
func newAgent() *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Hidden: true,
		Short: "Backup work on a compute's volume, run by the daemon"}
	install := &cobra.Command{
		Use:   "install DEST",
		Short: "Copy this binary to DEST (an init container's shared folder)",
		Args:  cobra.ExactArgs(1),
		RunE:  func(_ *cobra.Command, args []string) error { return installSelf(args[0]) },
	}
	run := &cobra.Command{
		Use:   "run",
		Short: "Run the job in $" + envAgentJob + " on the datadir in $" + envDatadir,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runAgent(ctx, cmd.OutOrStdout())
		},
	}
	cmd.AddCommand(install, run)
	return cmd
}

// installSelf copies the running binary to dest, whole or not at all.
func installSelf(dest string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(self)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dest), ".serverlessd-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, in)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o755)
	}
	if err != nil {
		return fmt.Errorf("install the agent at %s: %w", dest, err)
	}
	return os.Rename(tmp.Name(), dest)
}

// runAgent runs the job and writes its report, or its error, where the
// driver reads it.
func runAgent(ctx context.Context, stdout io.Writer) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "backup-agent")
	res, err := agentJob(ctx, log)
	out := []byte("error: ")
	if err == nil {
		out, err = json.Marshal(res)
	}
	if err != nil {
		out = append(out, err.Error()...)
	}
	path := os.Getenv(envAgentResult)
	if path == "" {
		path = defaultResult
	}
	if werr := os.WriteFile(path, out, 0o644); werr != nil {
		log.Warn("could not write the report", "path", path, "err", werr)
	}
	fmt.Fprintln(stdout, string(out))
	return err
}

func agentJob(ctx context.Context, log *slog.Logger) (backup.Result, error) {
	job, err := backup.ReadJob(os.Getenv(envAgentJob))
	if err != nil {
		return backup.Result{}, err
	}
	dir := os.Getenv(envDatadir)
	if dir == "" {
		return backup.Result{}, errors.New(envDatadir + " is not set")
	}
	t, err := backup.NewS3(ctx, backup.S3Options{Endpoint: os.Getenv(envS3Endpoint), Bucket: os.Getenv(envS3Bucket),
		Prefix: os.Getenv(envS3Prefix), Region: os.Getenv(envS3Region)})
	if err != nil {
		return backup.Result{}, fmt.Errorf("backup target: %w", err)
	}
	log = log.With("project", job.ProjectID, "compute", job.ComputeID, "job", job.Kind)
	log.Info("backup agent started", "datadir", dir)
	admin := compute.Credentials{User: mariadb.AdminUser, Password: os.Getenv(envAdminPass)}
	return backup.RunJob(ctx, t, dir, job, admin, log)
}
