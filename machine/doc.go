// Package machine reports what the machine the daemon runs on offers its
// computes.
package machine
