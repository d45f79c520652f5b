package loadtest

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"
)

// RSS returns the resident set size of this process in bytes, read from the
// VmRSS line of /proc/self/status (Linux only).
func RSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // "123456 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, errors.New("loadtest: unexpected VmRSS line " + strconv.Quote(sc.Text()))
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, err
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("loadtest: no VmRSS in /proc/self/status")
}
