package quantity

import (
	"strings"
	"testing"
)

func TestUnits(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"512Mi", 512 << 20, true},
		{"1Gi", 1 << 30, true},
		{"1.5Gi", 3 << 29, true},
		{"256M", 256e6, true},
		{"2G", 2e9, true},
		{"128974848", 128974848, true},
		{"1e9", 1e9, true},
		{"1E3", 1000, true},
		{"15e-1", 2, true}, // rounded up, as Kubernetes does
		{"100k", 100e3, true},
		{"64Ki", 64 << 10, true},
		{"1Ti", 1 << 40, true},
		{"1500m", 2, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"9223372036854775808", 0, false},
		{"8Ei", 0, false},
		{"", 0, false},
		{"Gi", 0, false},
		{"-1Gi", 0, false},
		{"+1Gi", 0, false},
		{" 1Gi", 0, false},
		{"1GB", 0, false},
		{"1gi", 0, false},
		{"1.", 0, false},
		{".5Gi", 0, false},
		{"1.2.3Mi", 0, false},
		{"1e100", 0, false},
		{strings.Repeat("1", MaxLen+1), 0, false},
	}
	for _, tt := range tests {
		got, err := Units(tt.in)
		if tt.ok && (err != nil || got != tt.want) {
			t.Errorf("Units(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
		if !tt.ok && err == nil {
			t.Errorf("Units(%q) = %d, want an error", tt.in, got)
		}
	}
}

func TestMilli(t *testing.T) {
	for in, want := range map[string]int64{"500m": 500, "2": 2000, "0.1": 100, "1.5": 1500, "0.0001": 1} {
		if got, err := Milli(in); err != nil || got != want {
			t.Errorf("Milli(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestRangeCheck(t *testing.T) {
	mem := Range{Min: 64 << 20, Max: 16 << 30, MaxIs: "this machine's memory"}
	cpu := Range{Min: 100, Max: 8000, Milli: true}
	tests := []struct {
		r       Range
		in      string
		want    int64
		errText string // "" means valid
	}{
		{mem, "128Mi", 128 << 20, ""},
		{mem, "64Mi", 64 << 20, ""},
		{mem, "16Gi", 16 << 30, ""},
		{mem, "16385Mi", 0, "too large: it must be between 64Mi and 16Gi (this machine's memory)"},
		{mem, "9223372036854775807", 0, "too large"},
		{mem, "99999Ei", 0, "too large"},
		{mem, "63Mi", 0, "too small: it must be between 64Mi and 16Gi"},
		{mem, "lots", 0, "invalid quantity \"lots\""},
		{cpu, "100m", 100, ""},
		{cpu, "0.1", 100, ""},
		{cpu, "8", 8000, ""},
		{cpu, "8001m", 0, "between 100m and 8"},
		{cpu, "99m", 0, "too small"},
	}
	for _, tt := range tests {
		got, err := tt.r.Check("field", tt.in)
		switch {
		case tt.errText == "" && (err != nil || got != tt.want):
			t.Errorf("Check(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		case tt.errText != "" && (err == nil || !strings.Contains(err.Error(), tt.errText) || !strings.HasPrefix(err.Error(), "field")):
			t.Errorf("Check(%q) = %d, %v; want an error naming field and saying %q", tt.in, got, err, tt.errText)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{1 << 30: "1Gi", 1536 << 20: "1536Mi", 1000: "1000", 0: "0", 3 << 40: "3Ti"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[int64]string{2000: "2", 100: "100m", 1500: "1500m"} {
		if got := FormatMilli(n); got != want {
			t.Errorf("FormatMilli(%d) = %q, want %q", n, got, want)
		}
	}
}
