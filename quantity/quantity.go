// Package quantity parses Kubernetes resource quantities ("500m", "1Gi",
// "1.5G", "1e9", "2") and checks them against ranges, for the API that
// accepts them and the drivers that use them. It depends on nothing of
// serverlessd's, so every package can import it; k8s.io/apimachinery stays
// out of the daemon's core.
//
// It accepts a subset of Kubernetes' syntax, so that whatever it accepts
// the kubernetes driver accepts too: no sign, no white space, digits with
// an optional fraction, then one suffix.
package quantity

import (
	"fmt"
	"math/big"
	"regexp"
	"strconv"
)

// MaxLen is the longest quantity accepted. No sane resource needs more
// digits, and it keeps error messages, which quote the value, short.
const MaxLen = 64

// syntax is digits, an optional fraction, then a binary or decimal suffix or
// a decimal exponent of at most two digits.
var syntax = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)((?:[KMGTPE]i)|[mkMGTPE]|[eE][+-]?[0-9]{1,2})?$`)

// multipliers maps each suffix to its factor.
var multipliers = map[string]*big.Rat{
	"": big.NewRat(1, 1), "m": big.NewRat(1, 1000),
	"k": big.NewRat(1e3, 1), "M": big.NewRat(1e6, 1), "G": big.NewRat(1e9, 1),
	"T": big.NewRat(1e12, 1), "P": big.NewRat(1e15, 1), "E": big.NewRat(1e18, 1),
	"Ki": big.NewRat(1<<10, 1), "Mi": big.NewRat(1<<20, 1), "Gi": big.NewRat(1<<30, 1),
	"Ti": big.NewRat(1<<40, 1), "Pi": big.NewRat(1<<50, 1), "Ei": big.NewRat(1<<60, 1),
}

// Parse returns the exact value of s.
func Parse(s string) (*big.Rat, error) {
	if len(s) > MaxLen {
		return nil, fmt.Errorf("invalid quantity: %d characters, at most %d", len(s), MaxLen)
	}
	m := syntax.FindStringSubmatch(s)
	if m == nil {
		return nil, fmt.Errorf("invalid quantity %q: want a number with an optional suffix, like 500m, 1Gi or 2", s)
	}
	v, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return nil, fmt.Errorf("invalid quantity %q", s)
	}
	return v.Mul(v, multiplier(m[2])), nil
}

// multiplier is the factor of a suffix the syntax accepted.
func multiplier(suffix string) *big.Rat {
	if f, ok := multipliers[suffix]; ok {
		return f
	}
	exp, _ := strconv.Atoi(suffix[1:]) // [+-]?[0-9]{1,2}
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(exp))), nil)
	if exp < 0 {
		return new(big.Rat).SetFrac(big.NewInt(1), p)
	}
	return new(big.Rat).SetInt(p)
}

func abs(n int) int { return max(n, -n) }

// Units returns s as a whole number of units (bytes, for memory and
// storage), rounded up as Kubernetes does: a request is never rounded down.
func Units(s string) (int64, error) { return scaled(s, 1) }

// Milli returns s in thousandths (millicores, for CPU), rounded up.
func Milli(s string) (int64, error) { return scaled(s, 1000) }

func scaled(s string, factor int64) (int64, error) {
	v, err := Parse(s)
	if err != nil {
		return 0, err
	}
	n, ok := ceilInt64(v.Mul(v, big.NewRat(factor, 1)))
	if !ok {
		return 0, fmt.Errorf("invalid quantity %q: too large", s)
	}
	return n, nil
}

// ceilInt64 rounds v up to an integer, and reports whether it fits an int64.
func ceilInt64(v *big.Rat) (int64, bool) {
	q, rem := new(big.Int).QuoRem(v.Num(), v.Denom(), new(big.Int))
	if rem.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	return q.Int64(), q.IsInt64()
}
