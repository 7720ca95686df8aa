package local

import (
	"fmt"
	"math"
	"math/big"
	"strings"
)

// quantitySuffixes maps Kubernetes quantity suffixes to their multipliers.
var quantitySuffixes = map[string]*big.Rat{
	"":   big.NewRat(1, 1),
	"m":  big.NewRat(1, 1000),
	"k":  big.NewRat(1e3, 1),
	"M":  big.NewRat(1e6, 1),
	"G":  big.NewRat(1e9, 1),
	"T":  big.NewRat(1e12, 1),
	"P":  big.NewRat(1e15, 1),
	"E":  big.NewRat(1e18, 1),
	"Ki": big.NewRat(1<<10, 1),
	"Mi": big.NewRat(1<<20, 1),
	"Gi": big.NewRat(1<<30, 1),
	"Ti": big.NewRat(1<<40, 1),
	"Pi": big.NewRat(1<<50, 1),
	"Ei": big.NewRat(1<<60, 1),
}

// parseQuantity parses a Kubernetes resource quantity ("512Mi", "1Gi",
// "1.5G", "1e9", "128974848") into a whole number of units, rounded up as
// Kubernetes does. k8s.io/apimachinery is deliberately not a dependency of
// the daemon's core, so this covers the syntax users write for memory.
func parseQuantity(s string) (int64, error) {
	num, suffix := splitQuantity(strings.TrimSpace(s))
	mult, ok := quantitySuffixes[suffix]
	if !ok {
		if m, ok2 := exponentSuffix(suffix); ok2 {
			mult = m
		} else {
			return 0, fmt.Errorf("invalid quantity %q: unknown suffix %q", s, suffix)
		}
	}
	if num == "" || num == "+" || num == "." || num == "+." {
		return 0, fmt.Errorf("invalid quantity %q", s)
	}
	r, ok := new(big.Rat).SetString(strings.TrimPrefix(num, "+"))
	if !ok {
		return 0, fmt.Errorf("invalid quantity %q", s)
	}
	r.Mul(r, mult)
	// Round up: Kubernetes never rounds a request down.
	q, rem := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if rem.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() || q.Int64() > math.MaxInt64/2 {
		return 0, fmt.Errorf("invalid quantity %q: too large", s)
	}
	return q.Int64(), nil
}

// splitQuantity splits "1.5Gi" into "1.5" and "Gi". Negative numbers are not
// accepted: no resource here can be negative.
func splitQuantity(s string) (num, suffix string) {
	i := 0
	if i < len(s) && s[i] == '+' {
		i++
	}
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	return s[:i], s[i:]
}

// exponentSuffix handles the decimal exponent form, "e3" or "E9".
func exponentSuffix(suffix string) (*big.Rat, bool) {
	if len(suffix) < 2 || (suffix[0] != 'e' && suffix[0] != 'E') {
		return nil, false
	}
	exp := suffix[1:]
	neg := strings.HasPrefix(exp, "-")
	exp = strings.TrimLeft(exp, "+-")
	if exp == "" || len(exp) > 2 || strings.Trim(exp, "0123456789") != "" {
		return nil, false
	}
	n := 0
	for _, c := range exp {
		n = n*10 + int(c-'0')
	}
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil)
	if neg {
		return new(big.Rat).SetFrac(big.NewInt(1), p), true
	}
	return new(big.Rat).SetInt(p), true
}
