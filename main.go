// Command serverlessd is serverless MariaDB in one binary. See README.md.
package main

import "github.com/serverlessd/serverlessd/cli"

func main() { cli.Execute() }
