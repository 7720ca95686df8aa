// Package cgroup puts the process tree of one compute (one mariadbd) in a
// Linux control group with a memory, CPU and pids limit.
//
// # Why
//
// A tenant's SQL can make mariadbd allocate memory without bound: MEMORY
// tables, large sorts and joins, many connections each with its own
// buffers. MariaDB's own caps (max_heap_table_size, tmp_table_size,
// sort_buffer_size, ...) are per session or per table, so they do not bound
// the process as a whole. Without a cgroup one tenant can push the whole
// machine into swap or make the kernel's global OOM killer pick another
// tenant's mariadbd, or the daemon. With a cgroup the kernel charges every
// page the process tree touches to that compute, kills only inside it when
// it goes over its limit, and throttles its CPU and caps its number of
// tasks (threads count as tasks).
//
// # cgroup v1 and v2
//
// Both hierarchies are supported, through github.com/containerd/cgroups/v3.
// On a unified (v2 only) host a Group is one directory under /sys/fs/cgroup
// with memory.max, memory.swap.max, cpu.max and pids.max. On a legacy or
// hybrid host (v1 controllers, maybe with an empty v2 mount at
// /sys/fs/cgroup/unified) a Group is one directory with the same path in each
// of the memory, cpu and pids hierarchies, with memory.limit_in_bytes,
// memory.memsw.limit_in_bytes, cpu.cfs_quota_us/cpu.cfs_period_us and
// pids.max. Swap is disabled for the group where the kernel accounts swap
// (memsw on v1, memory.swap.max on v2); otherwise v1 gets swappiness 0.
//
// # When a process is charged
//
// The caller starts the process and then calls Group.Add with its pid, so
// there are a few microseconds between fork and Add in which the child runs
// outside the group, and what it allocates then stays charged to the
// daemon's group. That is harmless for mariadbd: it allocates its buffer
// pool and caches well after startup, by which time it is in the group, and
// children and threads it creates later inherit the group.
//
// # Without root
//
// Creating cgroups needs root (or a delegated, writable cgroup subtree).
// Available reports whether that works here, and why not; when it does not,
// the caller should log that memory, CPU and pids limits are not enforced
// and run computes without a Group. On other operating systems Available
// always reports false.
package cgroup
