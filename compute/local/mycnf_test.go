package local

import (
	"strings"
	"testing"
)

func TestSizeMemory(t *testing.T) {
	def, err := memoryOf("")
	if err != nil || def != 256<<20 {
		t.Fatalf("default memory = %d, %v", def, err)
	}
	for _, mem := range []int64{1 << 20, 64 << 20, 256 << 20, 512 << 20, 1 << 30, 8 << 30, 256 << 30} {
		m := sizeMemory(mem)
		budget := max(mem, minMemory)
		if m.bufferPool != budget/2 {
			t.Errorf("%d MiB: buffer pool %d, want half", mem>>20, m.bufferPool)
		}
		// The fixed caches plus a sort buffer per connection stay within the
		// other half.
		rest := m.logBuffer + m.keyBuffer + m.ariaPagecache + m.tmpTable + m.maxConnections*m.sortBuffer/4
		if rest > budget/2 {
			t.Errorf("%d MiB: caches take %d MiB, over half the budget", mem>>20, rest>>20)
		}
		if m.logFile < templateLogFileSize || m.logFile%mib != 0 {
			t.Errorf("%d MiB: log file %d", mem>>20, m.logFile)
		}
	}
	if m := sizeMemory(256 << 20); m.logFile != templateLogFileSize {
		t.Errorf("the default compute's redo log (%d) differs from the template's: its first start would resize it", m.logFile)
	}
}

func TestRenderConfig(t *testing.T) {
	l := layout{root: "/var/lib/serverlessd/computes/cmp_1"}
	cnf := string(renderConfig(l, 1<<30, 10<<30, false))
	for _, want := range []string{
		"[mariadbd]",
		`datadir="/var/lib/serverlessd/computes/cmp_1/data"`,
		`socket="/var/lib/serverlessd/computes/cmp_1/run/mysqld.sock"`,
		`init-file="/var/lib/serverlessd/computes/cmp_1/init.sql"`,
		"skip-networking",
		"innodb-flush-log-at-trx-commit=1",
		"innodb-doublewrite=ON",
		"innodb-buffer-pool-dump-at-shutdown=ON",
		"innodb-buffer-pool-load-at-startup=ON",
		"innodb-buffer-pool-size=536870912",
		"maximum-max-heap-table-size=33554432",
		"max-session-mem-used=268435456",
		"maximum-max-session-mem-used=268435456",
		"innodb-temp-data-file-path=ibtmp1:1M:autoextend:max:1280M",
		"maximum-tmp-disk-table-size=1342177280",
		"skip-symbolic-links",
	} {
		if !strings.Contains(cnf, want+"\n") {
			t.Errorf("my.cnf lacks %q:\n%s", want, cnf)
		}
	}
}
