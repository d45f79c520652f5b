package main

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/fhirgate/fhirgate/internal/loadtest"
	"github.com/fhirgate/fhirgate/server"
)

// localCacheLimit is the server's bound on in-process cache entries.
const localCacheLimit = server.LocalCacheEntries

// memoryStageTimeout bounds the warming of one memory stage.
const memoryStageTimeout = 5 * time.Minute

// measureMemory warms two stages of f.memoryTokens distinct tokens each and
// records RSS and Go heap before and after each. With the in-process layer
// bounded, the second stage must add little: its entries evict the first's.
func (b *bench) measureMemory(ctx context.Context) error {
	n := b.f.memoryTokens
	b.env.idp.SetDelay(b.f.memoryLatency)
	defer b.env.idp.SetDelay(b.f.idpLatency)
	b.mem.Tokens = n
	b.mem.Warm = &memoryWarming{Concurrency: b.f.warmConcurrency, IdPLatency: b.f.memoryLatency.String(), Limit: localCacheLimit}
	b.mem.Stages = append(b.mem.Stages, snapshot())
	url := b.readURL()
	for stage := 1; stage <= 2; stage++ {
		calls0, t0 := b.userInfoCalls(), time.Now()
		failed, first := loadtest.Each(ctx, b.client, b.f.warmConcurrency, n, memoryStageTimeout, 0, func(int) (*http.Request, error) {
			tok, err := token(b.env.idp)
			if err != nil {
				return nil, err
			}
			return get(url, "Bearer "+tok)(0)
		})
		if err := ctx.Err(); err != nil {
			return err
		}
		s := snapshot()
		s.Tokens, s.Failed, s.IdPCalls, s.WarmSecond = n, failed, b.userInfoCalls()-calls0, time.Since(t0).Seconds()
		b.mem.Stages = append(b.mem.Stages, s)
		if failed > 0 {
			b.mem.Note = join(b.mem.Note, fmt.Sprintf("stage %d: %d failed, first: %s", stage, failed, first))
		}
	}
	st := b.mem.Stages
	grow1, grow2 := st[1].HeapMiB-st[0].HeapMiB, st[2].HeapMiB-st[1].HeapMiB
	b.mem.Warm.Growth = grow2
	b.mem.Note = join(fmt.Sprintf("Go heap %+.1f MiB for the first %d tokens, %+.1f MiB for the next %d", grow1, n, grow2, n), b.mem.Note)
	if n < localCacheLimit {
		// Below the limit both stages only add entries: nothing to judge.
		b.mem.Note = join(b.mem.Note, fmt.Sprintf("not judged: use -memory-tokens ≥ %d to fill the layer", localCacheLimit))
		return nil
	}
	// Bounded: once the first stage has filled the layer, the second stage
	// replaces entries and adds at most a quarter of the first's growth (or
	// 16 MiB of noise), where an unbounded cache would add as much again.
	b.mem.Verdict = verdictMissed
	if grow2 <= max(grow1/4, 16) && st[1].Failed == 0 && st[2].Failed == 0 {
		b.mem.Verdict = verdictOK
	}
	return nil
}

// snapshot collects garbage, returns freed memory to the OS and reads RSS
// and the Go heap in use.
func snapshot() memoryStage {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := memoryStage{HeapMiB: mib(int64(ms.HeapInuse))}
	if rss, err := loadtest.RSS(); err == nil {
		s.RSSMiB = mib(rss)
	}
	return s
}
