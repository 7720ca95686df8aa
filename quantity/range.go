package quantity

import (
	"fmt"
	"math/big"
	"strconv"
)

// Range is an inclusive range of a resource, in its base unit: bytes, or
// millicores when Milli is set (CPU).
type Range struct {
	Min, Max int64
	// Milli says the bounds are thousandths: a CPU range of 100..8000 is
	// 100m to 8 CPUs.
	Milli bool
	// MaxIs says where Max comes from, for the error message ("this
	// machine's memory"). It may be empty.
	MaxIs string
}

// Check parses s and checks that it lies in r. It returns the value in r's
// unit (rounded up); the error names field and the range, so that it can go
// to a user as it is.
func (r Range) Check(field, s string) (int64, error) {
	v, err := Parse(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w; it must be %s", field, err, r)
	}
	if r.Milli {
		v.Mul(v, big.NewRat(1000, 1))
	}
	// Compared exactly, before rounding, so that a value too large for an
	// int64 is out of range rather than an overflow.
	if v.Cmp(new(big.Rat).SetInt64(r.Max)) > 0 {
		return 0, fmt.Errorf("%s %q is too large: it must be %s", field, s, r)
	}
	n, _ := ceilInt64(v)
	if n < r.Min {
		return 0, fmt.Errorf("%s %q is too small: it must be %s", field, s, r)
	}
	return n, nil
}

// String describes the range: "between 64Mi and 16Gi (this machine's memory)".
func (r Range) String() string {
	s := "between " + r.format(r.Min) + " and " + r.format(r.Max)
	if r.MaxIs != "" {
		s += " (" + r.MaxIs + ")"
	}
	return s
}

func (r Range) format(n int64) string {
	if r.Milli {
		return FormatMilli(n)
	}
	return FormatBytes(n)
}

// FormatBytes writes n with the largest binary suffix that divides it:
// 1<<30 is "1Gi", 1536<<20 is "1536Mi", 1000 is "1000".
func FormatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"Ei", 1 << 60}, {"Pi", 1 << 50}, {"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// FormatMilli writes thousandths as Kubernetes does: 2000 is "2", 100 is
// "100m".
func FormatMilli(n int64) string {
	if n%1000 == 0 {
		return strconv.FormatInt(n/1000, 10)
	}
	return strconv.FormatInt(n, 10) + "m"
}
