package cli

import (
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/serverlessd/serverlessd/usage"
)

func newUsage(g *globals) *cobra.Command {
	var from, to, granularity string
	cmd := clientCmd(g, "usage [PROJECT]", "Show compute-seconds, storage and traffic: per project, or per hour/day of one project",
		cobra.MaximumNArgs(1), func(c *client, a []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"from": from, "to": to} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if len(a) == 0 {
				return billingReport(c, q)
			}
			q.Set("granularity", granularity)
			return projectUsage(c, a[0], q)
		})
	cmd.Flags().StringVar(&from, "from", "", "start, RFC 3339 (default: 24 hours before --to)")
	cmd.Flags().StringVar(&to, "to", "", "end, RFC 3339 (default: now)")
	cmd.Flags().StringVar(&granularity, "granularity", "hour", "bucket size for one project: hour or day")
	return cmd
}

func billingReport(c *client, q url.Values) error {
	return usageReport(c, "/api/v1/usage", q)
}

// usageReport prints a per-project report: the daemon's (/api/v1/usage) or
// one tenant's (/api/v1/tenants/{id}/usage).
func usageReport(c *client, path string, q url.Values) error {
	var r struct {
		Projects []usage.Line `json:"projects"`
		Total    usage.Line   `json:"total"`
	}
	if err := c.do("GET", path+"?"+q.Encode(), nil, &r); err != nil {
		return err
	}
	return c.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "PROJECT\tID\tCOMPUTE SECONDS\tSTORAGE\tIN\tOUT")
		for _, l := range append(r.Projects, r.Total) {
			fmt.Fprintf(w, "%s\t%s\t%.1f\t%s\t%s\t%s\n", l.ProjectName, l.ProjectID, l.ComputeSeconds,
				humanBytes(l.StorageBytes), humanBytes(l.BytesIn), humanBytes(l.BytesOut))
		}
	})
}

func projectUsage(c *client, project string, q url.Values) error {
	var r struct {
		Buckets []usage.Bucket `json:"buckets"`
	}
	if err := c.do("GET", projectPath(project)+"/usage?"+q.Encode(), nil, &r); err != nil {
		return err
	}
	return c.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "FROM\tCOMPUTE SECONDS\tSTORAGE\tIN\tOUT")
		for _, b := range r.Buckets {
			fmt.Fprintf(w, "%s\t%.1f\t%s\t%s\t%s\n", b.Start.Local().Format(time.DateTime), b.ComputeSeconds,
				humanBytes(b.StorageBytes), humanBytes(b.BytesIn), humanBytes(b.BytesOut))
		}
	})
}

// humanBytes renders a byte count for people: 1.5 MiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
