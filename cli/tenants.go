package cli

import (
	"errors"
	"fmt"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/serverlessd/serverlessd/store"
)

type (
	tenantReply struct {
		Tenant store.Tenant `json:"tenant"`
	}
	apiKeyReply struct {
		APIKey store.APIKey `json:"api_key"`
		Key    string       `json:"key,omitempty"`
	}
)

// clientCmdWith is clientCmd for a run that needs its command: to read
// which flags were set, or to write to stderr.
func clientCmdWith(g *globals, use, short string, args cobra.PositionalArgs, run func(cmd *cobra.Command, c *client, args []string) error) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: args,
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := g.newClient(cmd.OutOrStdout())
			if err != nil {
				return err
			}
			return run(cmd, c, a)
		},
	}
}

func tenantPath(t string) string { return "/api/v1/tenants/" + url.PathEscape(t) }

// quotaFlags are a tenant's quota flags, shared by create and update.
type quotaFlags struct {
	maxProjects, maxConnections int
	maxMemory, maxActiveMemory  string
	maxStorage                  string
	secondsPerMonth             int64
}

func (q *quotaFlags) register(cmd *cobra.Command) {
	cmd.Flags().IntVar(&q.maxProjects, "max-projects", 0, "most projects the tenant may have (0 = no limit)")
	cmd.Flags().StringVar(&q.maxMemory, "max-compute-memory", "", `most memory one compute may have, e.g. 2Gi ("" = no limit)`)
	cmd.Flags().IntVar(&q.maxConnections, "max-connections-per-project", 0, "most client connections per project (0 = no limit)")
	cmd.Flags().StringVar(&q.maxActiveMemory, "max-active-memory", "", `most memory of the tenant's computes running at once, e.g. 4Gi ("" = no limit)`)
	cmd.Flags().StringVar(&q.maxStorage, "max-storage", "", `most storage of each project, e.g. 20Gi ("" = no limit)`)
	cmd.Flags().Int64Var(&q.secondsPerMonth, "compute-seconds-per-month", 0, "most compute-seconds in a calendar month, UTC (0 = no limit)")
}

// body returns the quotas whose flags were given, or nil when none was:
// the API leaves out what it is not sent.
func (q *quotaFlags) body(cmd *cobra.Command) map[string]any {
	m := map[string]any{}
	if cmd.Flags().Changed("max-projects") {
		m["max_projects"] = q.maxProjects
	}
	if cmd.Flags().Changed("max-compute-memory") {
		m["max_compute_memory"] = q.maxMemory
	}
	if cmd.Flags().Changed("max-connections-per-project") {
		m["max_connections_per_project"] = q.maxConnections
	}
	if cmd.Flags().Changed("max-active-memory") {
		m["max_active_memory"] = q.maxActiveMemory
	}
	if cmd.Flags().Changed("max-storage") {
		m["max_storage"] = q.maxStorage
	}
	if cmd.Flags().Changed("compute-seconds-per-month") {
		m["compute_seconds_per_month"] = q.secondsPerMonth
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

func newTenant(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tenant", Short: "Create, list, show, change and delete tenants and see their usage"}
	show := func(c *client, path, method string, body any) error {
		var r tenantReply
		if err := c.do(method, path, body, &r); err != nil {
			return err
		}
		return c.print(r, func(w *tabwriter.Writer) { tenantTable(w, r.Tenant) })
	}

	var cq quotaFlags
	create := clientCmdWith(g, "create NAME", "Create a tenant, with optional quotas", cobra.ExactArgs(1), func(cmd *cobra.Command, c *client, a []string) error {
		body := map[string]any{"name": a[0]}
		if q := cq.body(cmd); q != nil {
			body["quotas"] = q
		}
		return show(c, "/api/v1/tenants", "POST", body)
	})
	cq.register(create)

	var uq quotaFlags
	var newName string
	update := clientCmdWith(g, "update TENANT", "Rename a tenant or change its quotas (only the flags given change)", cobra.ExactArgs(1), func(cmd *cobra.Command, c *client, a []string) error {
		body := map[string]any{}
		if cmd.Flags().Changed("name") {
			body["name"] = newName
		}
		if q := uq.body(cmd); q != nil {
			body["quotas"] = q
		}
		if len(body) == 0 {
			return errors.New("nothing to update: give --name or a quota flag (see --help)")
		}
		return show(c, tenantPath(a[0]), "PATCH", body)
	})
	update.Flags().StringVar(&newName, "name", "", "new name")
	uq.register(update)

	var from, to string
	usageCmd := clientCmd(g, "usage TENANT", "Show compute-seconds, storage and traffic of a tenant's projects", cobra.ExactArgs(1), func(c *client, a []string) error {
		q := url.Values{}
		for k, v := range map[string]string{"from": from, "to": to} {
			if v != "" {
				q.Set(k, v)
			}
		}
		return usageReport(c, tenantPath(a[0])+"/usage", q)
	})
	usageCmd.Flags().StringVar(&from, "from", "", "start, RFC 3339 (default: 24 hours before --to)")
	usageCmd.Flags().StringVar(&to, "to", "", "end, RFC 3339 (default: now)")

	cmd.AddCommand(create,
		clientCmd(g, "list", "List tenants", cobra.NoArgs, func(c *client, _ []string) error {
			var r struct {
				Tenants []store.Tenant `json:"tenants"`
			}
			if err := c.do("GET", "/api/v1/tenants?limit=1000", nil, &r); err != nil {
				return err
			}
			return c.print(r, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "ID\tNAME\tMAX PROJECTS\tMAX COMPUTE MEMORY\tMAX CONNECTIONS/PROJECT\tCREATED")
				for _, t := range r.Tenants {
					q := t.Quotas
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, limit(q.MaxProjects), limitStr(q.MaxComputeMemory),
						limit(q.MaxConnectionsPerProject), fmtTime(t.CreatedAt))
				}
			})
		}),
		clientCmd(g, "get TENANT", "Show a tenant and its quotas", cobra.ExactArgs(1), func(c *client, a []string) error {
			return show(c, tenantPath(a[0]), "GET", nil)
		}),
		update,
		clientCmd(g, "delete TENANT", "Delete a tenant", cobra.ExactArgs(1), func(c *client, a []string) error {
			if err := c.do("DELETE", tenantPath(a[0]), nil, nil); err != nil {
				return err
			}
			_, err := fmt.Fprintf(c.out, "tenant %s deleted\n", a[0])
			return err
		}),
		usageCmd,
	)
	return cmd
}

func tenantTable(w *tabwriter.Writer, t store.Tenant) {
	q := t.Quotas
	fmt.Fprintf(w, "id:\t%s\nname:\t%s\nmax_projects:\t%s\nmax_compute_memory:\t%s\nmax_connections_per_project:\t%s\nmax_active_memory:\t%s\nmax_storage:\t%s\ncompute_seconds_per_month:\t%s\ncreated:\t%s\nupdated:\t%s\n",
		t.ID, t.Name, limit(q.MaxProjects), limitStr(q.MaxComputeMemory), limit(q.MaxConnectionsPerProject),
		limitStr(q.MaxActiveMemory), limitStr(q.MaxStorage), limit(int(q.ComputeSecondsPerMonth)), fmtTime(t.CreatedAt), fmtTime(t.UpdatedAt))
}

// limit renders a quota, where 0 means none.
func limit(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

func limitStr(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

var scopes = []string{store.ScopeAdmin, store.ScopeTenant, store.ScopeProject}

func newAPIKey(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "api-key", Short: "Create, list and revoke a tenant's API keys"}

	var tenant, name, scope, project, expiresAt string
	var readOnly bool
	create := clientCmdWith(g, "create", "Create an API key and print it (shown only this once)", cobra.NoArgs, func(cmd *cobra.Command, c *client, _ []string) error {
		known := false
		for _, s := range scopes {
			known = known || scope == s
		}
		if !known {
			return fmt.Errorf("--scope must be admin, tenant or project, got %q", scope)
		}
		body := map[string]any{"name": name, "scope": scope, "read_only": readOnly}
		if project != "" {
			body["project"] = project
		}
		if expiresAt != "" {
			body["expires_at"] = expiresAt
		}
		var r apiKeyReply
		if err := c.do("POST", tenantPath(tenant)+"/api_keys", body, &r); err != nil {
			return err
		}
		fmt.Fprintln(cmd.ErrOrStderr(), "note: the key is shown only now; store it safely, it cannot be shown again")
		return c.print(r, func(w *tabwriter.Writer) {
			apiKeyTable(w, r.APIKey)
			fmt.Fprintf(w, "key:\t%s\t(shown once)\n", r.Key)
		})
	})
	f := create.Flags()
	f.StringVar(&tenant, "tenant", "", "tenant (id or name) the key belongs to (required)")
	f.StringVar(&name, "name", "", "the key's name, to tell keys apart (required)")
	f.StringVar(&scope, "scope", "", "what the key may reach: admin (everything), tenant (its tenant) or project (one project) (required)")
	f.StringVar(&project, "project", "", "the project (id or name) of a project-scoped key")
	f.BoolVar(&readOnly, "read-only", false, "allow reads (GET) only")
	f.StringVar(&expiresAt, "expires-at", "", "expiry, RFC 3339, e.g. 2026-01-02T15:04:05Z (default: never)")
	for _, req := range []string{"tenant", "name", "scope"} {
		_ = create.MarkFlagRequired(req)
	}

	var listTenant string
	list := clientCmd(g, "list", "List a tenant's API keys (never the keys themselves)", cobra.NoArgs, func(c *client, _ []string) error {
		var r struct {
			APIKeys []store.APIKey `json:"api_keys"`
		}
		if err := c.do("GET", tenantPath(listTenant)+"/api_keys", nil, &r); err != nil {
			return err
		}
		return c.print(r, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "ID\tNAME\tSCOPE\tPROJECT\tREAD-ONLY\tEXPIRES\tLAST USED\tCREATED")
			for _, k := range r.APIKeys {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\t%s\t%s\t%s\n", k.ID, k.Name, k.Scope, limitStr(k.ProjectID), k.ReadOnly,
					fmtTime(k.ExpiresAt), fmtTime(k.LastUsedAt), fmtTime(k.CreatedAt))
			}
		})
	})
	list.Flags().StringVar(&listTenant, "tenant", "", "tenant (id or name) (required)")
	_ = list.MarkFlagRequired("tenant")

	var revokeTenant string
	revoke := clientCmd(g, "revoke KEY_ID", "Revoke an API key: it stops working at once", cobra.ExactArgs(1), func(c *client, a []string) error {
		if err := c.do("DELETE", tenantPath(revokeTenant)+"/api_keys/"+url.PathEscape(a[0]), nil, nil); err != nil {
			return err
		}
		_, err := fmt.Fprintf(c.out, "API key %s revoked\n", a[0])
		return err
	})
	revoke.Flags().StringVar(&revokeTenant, "tenant", "", "tenant (id or name) the key belongs to (required)")
	_ = revoke.MarkFlagRequired("tenant")

	cmd.AddCommand(create, list, revoke)
	return cmd
}

func apiKeyTable(w *tabwriter.Writer, k store.APIKey) {
	fmt.Fprintf(w, "id:\t%s\ntenant:\t%s\nname:\t%s\nscope:\t%s\n", k.ID, k.TenantID, k.Name, k.Scope)
	if k.ProjectID != "" {
		fmt.Fprintf(w, "project:\t%s\n", k.ProjectID)
	}
	fmt.Fprintf(w, "read_only:\t%t\nexpires:\t%s\ncreated:\t%s\n", k.ReadOnly, fmtTime(k.ExpiresAt), fmtTime(k.CreatedAt))
}
