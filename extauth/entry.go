package extauth

import (
	"errors"
	"strings"
)

// entryVersion is the version of the cached encoding; entries of another
// version are misses.
const entryVersion = "v2"

// entry is a cached validation: a Result, or the reason of a negative answer.
type entry struct {
	Result   *Result
	Negative string
}

// encode writes e as newline-separated fields: "v2", then "r" and the four
// Result fields, or "n" and the reason. Ids, references and reasons never
// contain a newline. A compact text format keeps the decoding on the hot path
// of every cached request to a few string cuts instead of a JSON decode.
func (e entry) encode() ([]byte, error) {
	var fields []string
	switch {
	case e.Result != nil && e.Negative == "":
		r := e.Result
		fields = []string{entryVersion, "r", r.Project, r.Membership, r.Profile, r.Login}
	case e.Result == nil && e.Negative != "":
		fields = []string{entryVersion, "n", e.Negative}
	default:
		return nil, errors.New("extauth: an entry is a result or a negative answer")
	}
	for _, f := range fields {
		if f == "" || strings.ContainsAny(f, "\n\r") {
			return nil, errors.New("extauth: empty field or newline in a cache entry")
		}
	}
	return []byte(strings.Join(fields, "\n")), nil
}

var errBadEntry = errors.New("extauth: unusable cache entry")

// decodeEntry reads what encode wrote.
func decodeEntry(b []byte) (entry, error) {
	s := string(b)
	next := func() string {
		f, rest, _ := strings.Cut(s, "\n")
		s = rest
		return f
	}
	if next() != entryVersion {
		return entry{}, errBadEntry
	}
	switch next() {
	case "r":
		r := &Result{Project: next(), Membership: next(), Profile: next(), Login: next()}
		if s != "" || r.Project == "" || r.Membership == "" || r.Profile == "" || r.Login == "" {
			return entry{}, errBadEntry
		}
		return entry{Result: r}, nil
	case "n":
		reason := next()
		if s != "" || reason == "" {
			return entry{}, errBadEntry
		}
		return entry{Negative: reason}, nil
	}
	return entry{}, errBadEntry
}
