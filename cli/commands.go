package cli

import (
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/serverlessd/serverlessd/store"
)

// API response shapes the CLI reads.
type (
	credentials struct {
		Name             string `json:"name"`
		Password         string `json:"password"`
		MySQLUser        string `json:"mysql_user"`
		ConnectionString string `json:"connection_string"`
	}
	projectReply struct {
		Project store.Project `json:"project"`
		Role    *credentials  `json:"role,omitempty"`
	}
	computeReply struct {
		Compute   store.Compute    `json:"compute"`
		Operation *store.Operation `json:"operation,omitempty"`
	}
	roleReply struct {
		Role        store.Role   `json:"role"`
		Credentials *credentials `json:"credentials,omitempty"`
	}
)

// clientCmd builds a command whose RunE gets a ready API client.
func clientCmd(g *globals, use, short string, args cobra.PositionalArgs, run func(c *client, args []string) error) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: args,
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := g.newClient(cmd.OutOrStdout())
			if err != nil {
				return err
			}
			return run(c, a)
		},
	}
}

func projectPath(p string) string { return "/api/v1/projects/" + url.PathEscape(p) }

func newProject(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "project", Short: "Create, list, show, update and delete projects"}
	var idle int
	var memory, tenant, listTenant, poolMode string
	var noCompute bool
	create := clientCmd(g, "create NAME", "Create a project and its compute, and print how to connect", cobra.ExactArgs(1),
		func(c *client, a []string) error {
			return createProject(c, a[0], tenant, idle, memory, poolMode, noCompute)
		})
	create.Flags().IntVar(&idle, "idle-timeout", -1, "seconds without traffic before suspending (0 = never; default 300)")
	create.Flags().StringVar(&memory, "memory", "", "compute memory, e.g. 512Mi (default from the daemon's config)")
	create.Flags().StringVar(&poolMode, "pool-mode", "", `"session" (default) or "transaction": client sessions share backend connections, one per transaction`)
	create.Flags().BoolVar(&noCompute, "no-compute", false, "create the project only")
	create.Flags().StringVar(&tenant, "tenant", "", "tenant (id or name) to create the project in (default: the API key's tenant, or the default tenant)")
	list := clientCmd(g, "list", "List projects", cobra.NoArgs, func(c *client, _ []string) error { return listProjects(c, listTenant) })
	list.Flags().StringVar(&listTenant, "tenant", "", "list only this tenant's projects (id or name)")
	cmd.AddCommand(create, list, newProjectUpdate(g),
		clientCmd(g, "get PROJECT", "Show a project", cobra.ExactArgs(1), func(c *client, a []string) error {
			var r projectReply
			if err := c.do("GET", projectPath(a[0]), nil, &r); err != nil {
				return err
			}
			return c.print(r, func(w *tabwriter.Writer) { projectTable(w, r.Project) })
		}),
		clientCmd(g, "delete PROJECT", "Delete a project, its compute and all its data", cobra.ExactArgs(1), func(c *client, a []string) error {
			if err := c.do("DELETE", projectPath(a[0]), nil, nil); err != nil {
				return err
			}
			_, err := fmt.Fprintf(c.out, "project %s deleted\n", a[0])
			return err
		}),
	)
	return cmd
}

// projectFlags are the project settings `project update` changes: only
// those given on the command line.
var projectFlags = []struct{ flag, key, usage string }{
	{"idle-timeout", "idle_timeout", "seconds without traffic before suspending (0 = never)"},
	{"pinned-idle-timeout", "pinned_idle_timeout", "seconds a session holding a transaction or locks may stay idle before it is closed (0 = never)"},
	{"max-connections", "max_connections", "most client connections to the project (0 = the daemon's default)"},
	{"pool-size", "pool_size", "backend connections pooled sessions share (0 = half of what the compute takes)"},
	{"pool-wait-timeout", "pool_wait_timeout", "seconds a pooled session waits for a busy pool before its statement fails (0 = 30)"},
}

func newProjectUpdate(g *globals) *cobra.Command {
	ints := make([]int, len(projectFlags))
	var poolMode string
	var cmd *cobra.Command
	cmd = clientCmd(g, "update PROJECT", "Change a project's settings", cobra.ExactArgs(1), func(c *client, a []string) error {
		cfg := map[string]any{}
		for i, f := range projectFlags {
			if cmd.Flags().Changed(f.flag) {
				cfg[f.key] = ints[i]
			}
		}
		if cmd.Flags().Changed("pool-mode") {
			cfg["pool_mode"] = poolMode
		}
		if len(cfg) == 0 {
			return fmt.Errorf("nothing to change: give at least one setting (see --help)")
		}
		var r projectReply
		if err := c.do("PATCH", projectPath(a[0]), map[string]any{"config": cfg}, &r); err != nil {
			return err
		}
		return c.print(r, func(w *tabwriter.Writer) { projectTable(w, r.Project) })
	})
	for i, f := range projectFlags {
		cmd.Flags().IntVar(&ints[i], f.flag, 0, f.usage)
	}
	cmd.Flags().StringVar(&poolMode, "pool-mode", "", `"session": a backend connection per client session; "transaction": client sessions share the pool's connections, one per transaction`)
	return cmd
}

func createProject(c *client, name, tenant string, idle int, memory, poolMode string, noCompute bool) error {
	body := map[string]any{"name": name}
	if tenant != "" {
		body["tenant"] = tenant
	}
	cfg := map[string]any{}
	if idle >= 0 {
		cfg["idle_timeout"] = idle
	}
	if poolMode != "" {
		cfg["pool_mode"] = poolMode
	}
	if len(cfg) > 0 {
		body["config"] = cfg
	}
	var p projectReply
	if err := c.do("POST", "/api/v1/projects", body, &p); err != nil {
		return err
	}
	var cr *computeReply
	if !noCompute {
		cr = &computeReply{}
		spec := map[string]any{"config": map[string]any{"resources": map[string]string{"memory": memory}}}
		if err := c.do("POST", projectPath(p.Project.ID)+"/compute", spec, cr); err != nil {
			return fmt.Errorf("project %s created, but its compute failed: %w", name, err)
		}
	}
	return c.print(map[string]any{"project": p.Project, "role": p.Role, "compute": cr}, func(w *tabwriter.Writer) {
		projectTable(w, p.Project)
		if cr != nil {
			fmt.Fprintf(w, "compute:\t%s (%s)\n", cr.Compute.ID, cr.Compute.State)
		}
		fmt.Fprintf(w, "user:\t%s\n", p.Role.MySQLUser)
		fmt.Fprintf(w, "password:\t%s\t(shown once)\n", p.Role.Password)
		fmt.Fprintf(w, "connect:\t%s\n", p.Role.ConnectionString)
	})
}

func projectTable(w *tabwriter.Writer, p store.Project) {
	fmt.Fprintf(w, "id:\t%s\nname:\t%s\ntenant:\t%s\nidle_timeout:\t%ds\n", p.ID, p.Name, p.TenantID, p.Config.IdleTimeout)
	mode := p.Config.PoolMode
	if mode == "" {
		mode = store.PoolSession
	}
	fmt.Fprintf(w, "pool_mode:\t%s\n", mode)
	if mode == store.PoolTransaction {
		fmt.Fprintf(w, "pool_size:\t%s\n", orDefault(p.Config.PoolSize, "default"))
		fmt.Fprintf(w, "pool_wait_timeout:\t%s\n", orDefault(p.Config.PoolWaitTimeout, "30"))
	}
	fmt.Fprintf(w, "created:\t%s\n", fmtTime(p.CreatedAt))
}

func orDefault(v int, def string) string {
	if v == 0 {
		return def
	}
	return strconv.Itoa(v)
}

func listProjects(c *client, tenant string) error {
	q := url.Values{"limit": {"1000"}}
	if tenant != "" {
		q.Set("tenant", tenant)
	}
	var r struct {
		Projects []store.Project `json:"projects"`
	}
	if err := c.do("GET", "/api/v1/projects?"+q.Encode(), nil, &r); err != nil {
		return err
	}
	return c.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tNAME\tTENANT\tIDLE TIMEOUT\tCREATED")
		for _, p := range r.Projects {
			fmt.Fprintf(w, "%s\t%s\t%s\t%ds\t%s\n", p.ID, p.Name, p.TenantID, p.Config.IdleTimeout, fmtTime(p.CreatedAt))
		}
	})
}

func newCompute(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "compute", Short: "Manage a project's compute node"}
	var memory, cpu, image string
	create := clientCmd(g, "create PROJECT", "Create and start the project's compute", cobra.ExactArgs(1), func(c *client, a []string) error {
		spec := map[string]any{"config": map[string]any{"image": image, "resources": map[string]string{"memory": memory, "cpu": cpu}}}
		var r computeReply
		if err := c.do("POST", projectPath(a[0])+"/compute", spec, &r); err != nil {
			return err
		}
		return printCompute(c, r)
	})
	create.Flags().StringVar(&memory, "memory", "", "memory, e.g. 1Gi")
	create.Flags().StringVar(&cpu, "cpu", "", "CPU, e.g. 500m")
	create.Flags().StringVar(&image, "image", "", "image (kubernetes driver)")
	action := func(verb, method, suffix string) func(c *client, a []string) error {
		return func(c *client, a []string) error {
			var cur computeReply
			if err := c.do("GET", projectPath(a[0])+"/compute", nil, &cur); err != nil {
				return err
			}
			var r computeReply
			if err := c.do(method, projectPath(a[0])+"/compute/"+url.PathEscape(cur.Compute.ID)+suffix, nil, &r); err != nil {
				return fmt.Errorf("%s compute of %s: %w", verb, a[0], err)
			}
			return printCompute(c, r)
		}
	}
	cmd.AddCommand(create,
		clientCmd(g, "get PROJECT", "Show the project's compute", cobra.ExactArgs(1), func(c *client, a []string) error {
			var r computeReply
			if err := c.do("GET", projectPath(a[0])+"/compute", nil, &r); err != nil {
				return err
			}
			return printCompute(c, r)
		}),
		clientCmd(g, "suspend PROJECT", "Suspend the project's compute", cobra.ExactArgs(1), action("suspend", "POST", "/suspend")),
		clientCmd(g, "resume PROJECT", "Resume the project's compute", cobra.ExactArgs(1), action("resume", "POST", "/resume")),
		clientCmd(g, "destroy PROJECT", "Destroy the project's compute and its data", cobra.ExactArgs(1), action("destroy", "DELETE", "")),
	)
	return cmd
}

func printCompute(c *client, r computeReply) error {
	return c.print(r, func(w *tabwriter.Writer) {
		cm := r.Compute
		fmt.Fprintf(w, "id:\t%s\nproject:\t%s\nstate:\t%s\ndriver:\t%s\nmemory:\t%s\n", cm.ID, cm.ProjectID, cm.State, cm.Driver, cm.Spec.Resources.Memory)
		if cm.Error != "" {
			fmt.Fprintf(w, "error:\t%s\n", cm.Error)
		}
		fmt.Fprintf(w, "started:\t%s\nsuspended:\t%s\n", fmtTime(cm.StartedAt), fmtTime(cm.SuspendedAt))
		if op := r.Operation; op != nil {
			fmt.Fprintf(w, "operation:\t%s %s %s in %.1f ms\n", op.ID, op.Action, op.Status, op.DurationMS)
		}
	})
}

func newRole(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "role", Short: "Manage a project's database roles"}
	showCreds := func(c *client, r roleReply) error {
		return c.print(r, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "role:\t%s\nuser:\t%s\npassword:\t%s\t(shown once)\nconnect:\t%s\n",
				r.Role.Name, r.Credentials.MySQLUser, r.Credentials.Password, r.Credentials.ConnectionString)
		})
	}
	cmd.AddCommand(
		clientCmd(g, "create PROJECT NAME", "Create a role with a generated password", cobra.ExactArgs(2), func(c *client, a []string) error {
			var r roleReply
			if err := c.do("POST", projectPath(a[0])+"/roles", map[string]string{"name": a[1]}, &r); err != nil {
				return err
			}
			return showCreds(c, r)
		}),
		clientCmd(g, "list PROJECT", "List roles (never their passwords)", cobra.ExactArgs(1), func(c *client, a []string) error {
			var r struct {
				Roles []store.Role `json:"roles"`
			}
			if err := c.do("GET", projectPath(a[0])+"/roles", nil, &r); err != nil {
				return err
			}
			return c.print(r, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tCREATED\tUPDATED")
				for _, role := range r.Roles {
					fmt.Fprintf(w, "%s\t%s\t%s\n", role.Name, fmtTime(role.CreatedAt), fmtTime(role.UpdatedAt))
				}
			})
		}),
		clientCmd(g, "reset-password PROJECT NAME", "Give a role a new generated password", cobra.ExactArgs(2), func(c *client, a []string) error {
			var r roleReply
			if err := c.do("POST", projectPath(a[0])+"/roles/"+url.PathEscape(a[1])+"/reset_password", nil, &r); err != nil {
				return err
			}
			return showCreds(c, r)
		}),
		clientCmd(g, "delete PROJECT NAME", "Delete a role", cobra.ExactArgs(2), func(c *client, a []string) error {
			if err := c.do("DELETE", projectPath(a[0])+"/roles/"+url.PathEscape(a[1]), nil, nil); err != nil {
				return err
			}
			_, err := fmt.Fprintf(c.out, "role %s deleted from %s\n", a[1], a[0])
			return err
		}),
	)
	return cmd
}

func newOperations(g *globals) *cobra.Command {
	return clientCmd(g, "operations PROJECT", "List a project's compute operations, newest first", cobra.ExactArgs(1), func(c *client, a []string) error {
		var r struct {
			Operations []store.Operation `json:"operations"`
		}
		if err := c.do("GET", projectPath(a[0])+"/operations", nil, &r); err != nil {
			return err
		}
		return c.print(r, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "ID\tACTION\tSTATUS\tREASON\tSTARTED\tDURATION\tERROR")
			for _, op := range r.Operations {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%.1f ms\t%s\n", op.ID, op.Action, op.Status, op.Reason, fmtTime(op.StartedAt), op.DurationMS, op.Error)
			}
		})
	})
}
