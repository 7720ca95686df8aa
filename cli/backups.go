package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/serverlessd/serverlessd/store"
)

// backupsReply is GET /projects/{id}/backups.
type backupsReply struct {
	ProjectID string `json:"project_id"`
	ComputeID string `json:"compute_id"`
	Backups   struct {
		Snapshots []struct {
			TakenAt time.Time `json:"taken_at"`
		} `json:"snapshots"`
		Earliest time.Time `json:"earliest"`
		Latest   time.Time `json:"latest"`
		Binlogs  int       `json:"binlogs"`
	} `json:"backups"`
}

func newBackup(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "backup", Short: "List a project's backups and restore it to a point in time"}
	list := clientCmd(g, "list PROJECT", "List snapshots and the restorable window", cobra.ExactArgs(1), func(c *client, a []string) error {
		var r backupsReply
		if err := c.do("GET", projectPath(a[0])+"/backups", nil, &r); err != nil {
			return err
		}
		return c.print(r, func(w *tabwriter.Writer) {
			b := r.Backups
			fmt.Fprintf(w, "restorable from:\t%s\nrestorable to:\t%s\nbinary logs:\t%d\n", fmtTime(b.Earliest), fmtTime(b.Latest), b.Binlogs)
			fmt.Fprintln(w, "SNAPSHOT TAKEN AT")
			for _, s := range b.Snapshots {
				fmt.Fprintln(w, s.TakenAt.Format(time.RFC3339Nano))
			}
		})
	})
	var to string
	restore := clientCmd(g, "restore PROJECT --to TIME", "Bring the project's data back to a time (RFC 3339, or latest)", cobra.ExactArgs(1), func(c *client, a []string) error {
		var r struct {
			Compute   store.Compute    `json:"compute"`
			Operation *store.Operation `json:"operation"`
		}
		if err := c.do("POST", projectPath(a[0])+"/restore", map[string]string{"to": to}, &r); err != nil {
			return fmt.Errorf("restore %s to %s: %w", a[0], to, err)
		}
		return printCompute(c, computeReply{Compute: r.Compute, Operation: r.Operation})
	})
	restore.Flags().StringVar(&to, "to", "", "the time to return to, e.g. 2026-12-01T10:00:00Z, or latest")
	_ = restore.MarkFlagRequired("to")
	undelete := clientCmd(g, "undelete PROJECT_ID", "Bring back a project deleted within the backup retention", cobra.ExactArgs(1), func(c *client, a []string) error {
		var r struct {
			Project   store.Project    `json:"project"`
			Compute   store.Compute    `json:"compute"`
			Operation *store.Operation `json:"operation"`
		}
		if err := c.do("POST", projectPath(a[0])+"/undelete", nil, &r); err != nil {
			return fmt.Errorf("undelete %s: %w", a[0], err)
		}
		return c.print(r, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "project:\t%s (%s)\ncompute:\t%s %s\n", r.Project.Name, r.Project.ID, r.Compute.ID, r.Compute.State)
		})
	})
	cmd.AddCommand(list, restore, undelete)
	return cmd
}

func newBranch(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "branch", Short: "Make a new project from another's data"}
	var at string
	create := clientCmd(g, "create SOURCE NAME", "Create project NAME with SOURCE's data (now, or --at a past time)", cobra.ExactArgs(2), func(c *client, a []string) error {
		var r struct {
			Project  store.Project  `json:"project"`
			Roles    []credentials  `json:"roles"`
			Compute  store.Compute  `json:"compute"`
			BranchOf map[string]any `json:"branch_of"`
		}
		if err := c.do("POST", projectPath(a[0])+"/branches", map[string]string{"name": a[1], "at": at}, &r); err != nil {
			return fmt.Errorf("branch %s from %s: %w", a[1], a[0], err)
		}
		return c.print(r, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "project:\t%s (%s)\nfrom:\t%s at %v\ncompute:\t%s %s\n", r.Project.Name, r.Project.ID,
				a[0], r.BranchOf["at"], r.Compute.ID, r.Compute.State)
			for _, cr := range r.Roles {
				fmt.Fprintf(w, "role %s:\tuser %s password %s\t(shown once)\n", cr.Name, cr.MySQLUser, cr.Password)
			}
		})
	})
	create.Flags().StringVar(&at, "at", "now", "the time of SOURCE's data: now, or an RFC 3339 time within its backups")
	cmd.AddCommand(create)
	return cmd
}
