package mariadb

// MallocArenaMax is what every compute's mariadbd gets as
// MALLOC_ARENA_MAX. glibc's default, eight arenas per core, leaves the
// memory that a connection's thread freed spread over many arenas, where
// it stays: the process grows past what it uses, and a compute's memory
// limit counts it. Two arenas keep a busy compute well inside its limit
// at the same throughput.
const MallocArenaMax = "2"
