package middleware

import (
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the HTTP and authentication collectors of the chain.
type Metrics struct {
	requests *prometheus.CounterVec   // route, method, status
	duration *prometheus.HistogramVec // route
	auth     *prometheus.CounterVec   // method (local, external, none), result (ok or a reason)
	// okLocal and okExternal are the auth counters of the hot path, resolved once.
	okLocal, okExternal prometheus.Counter
}

// NewMetrics registers the collectors with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fhirgate_http_requests_total",
			Help: "HTTP requests by route template, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fhirgate_http_request_duration_seconds",
			Help:    "HTTP request latency by route template.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fhirgate_auth_results_total",
			Help: "Authentication results by token kind (local, external, none) and result (ok or the refusal reason).",
		}, []string{"kind", "result"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.auth} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.okLocal = m.auth.WithLabelValues("local", "ok")
	m.okExternal = m.auth.WithLabelValues("external", "ok")
	return m, nil
}

// Handler counts every request by route template (never by raw path, which
// would let clients create unbounded label values).
func (m *Metrics) Handler(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	m.requests.WithLabelValues(route, c.Request.Method, strconv.Itoa(c.Writer.Status())).Inc()
	m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
}

func (m *Metrics) authResult(kind, result string) {
	switch {
	case m == nil:
	case result == "ok" && kind == "local":
		m.okLocal.Inc()
	case result == "ok" && kind == "external":
		m.okExternal.Inc()
	default:
		m.auth.WithLabelValues(kind, result).Inc()
	}
}
