// Package loadtest drives fixed-concurrency HTTP load against a server on
// loopback and summarises it: request counts, errors, and latency quantiles
// from a log-linear histogram. It is the measuring part of the fhirgate-bench
// tool and holds no fhirgate-specific logic.
package loadtest

import (
	"math/bits"
	"time"
)

// subBits sets the histogram precision: each power-of-two range of
// nanoseconds is split into 2^(subBits-1) buckets, so a recorded value is
// off by less than 1/64 (≈1.6 %).
const (
	subBits    = 7
	subBuckets = 1 << subBits // values below this are recorded exactly
	half       = subBuckets / 2
	// maxShift covers values up to 2^(subBits+maxShift) ns (≈ 39 hours).
	maxShift   = 40
	numBuckets = subBuckets + maxShift*half
)

// Histogram records durations in log-linear buckets (an HDR-style histogram
// with about 1.6 % relative error). The zero value is ready to use. It is not
// safe for concurrent use: give each worker its own and Merge them.
type Histogram struct {
	counts [numBuckets]uint64
	total  uint64
	max    time.Duration
}

// bucket returns the index of the bucket holding v nanoseconds.
func bucket(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	shift := bits.Len64(v) - subBits // ≥ 1
	if shift > maxShift {
		return numBuckets - 1
	}
	top := v >> uint(shift) // in [half, subBuckets)
	return subBuckets + (shift-1)*half + int(top-half)
}

// lowerBound returns the smallest value, in nanoseconds, recorded in bucket i.
func lowerBound(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	j := i - subBuckets
	shift := j/half + 1
	top := uint64(j%half + half)
	return top << uint(shift)
}

// Record adds one observation. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucket(uint64(d))]++
	h.total++
	if d > h.max {
		h.max = d
	}
}

// Merge adds every observation of o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	if o.max > h.max {
		h.max = o.max
	}
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.total }

// Max returns the largest observation.
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns the duration at quantile q (0 < q ≤ 1): the lower bound of
// the bucket holding the observation of that rank, never more than Max. It
// returns 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > h.total {
		rank = h.total
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			d := time.Duration(lowerBound(i))
			return min(d, h.max)
		}
	}
	return h.max
}
