// Package bench is serverlessd's performance suite.
//
// The suite itself is the program in bench/cmd/benchsuite: it drives a real
// `serverlessd serve` built from the tree, with real clients (sysbench, the
// go-sql-driver), next to a bare mariadbd and haproxy as references, and
// writes BENCHMARKS.md. This package holds what both the program and the
// in-process Go benchmarks of bench_test.go need: sysbench and haproxy
// runners, a bare mariadbd for the start-up floor, and percentiles.
//
//	go run ./bench/cmd/benchsuite -out BENCHMARKS.md    # everything (make bench)
//	go run ./bench/cmd/benchsuite -only throughput      # the sysbench matrix (make bench-proxy)
//
// Nothing here runs under `go test ./...` without -bench: the package has
// benchmarks but no tests, so `make test` stays fast.
package bench
