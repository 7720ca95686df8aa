//go:build !linux && !darwin

package server

// machineMemory is unknown on this system: the shared maximum applies.
func machineMemory() int64 { return 0 }
