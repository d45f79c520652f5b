package extauth

import "github.com/prometheus/client_golang/prometheus"

// metrics are the Prometheus collectors of one Authenticator.
type metrics struct {
	cache           *prometheus.CounterVec   // result: hit, negative, miss, error, corrupt
	cacheHit        prometheus.Counter       // cache{result="hit"}, resolved once for the hot path
	cacheWrites     *prometheus.CounterVec   // result: ok, error
	userinfo        *prometheus.CounterVec   // provider, status
	userinfoSeconds *prometheus.HistogramVec // provider
	flights         prometheus.Counter
	collapsed       prometheus.Counter
	signatures      *prometheus.CounterVec // provider, result
	clusterLocks    *prometheus.CounterVec // result: acquired, waited
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fhirgate_extauth_cache_lookups_total",
			Help: "External token cache lookups by result (hit, negative, miss, error, corrupt).",
		}, []string{"result"}),
		cacheWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fhirgate_extauth_cache_writes_total",
			Help: "External token cache writes and deletes by result (ok, error).",
		}, []string{"result"}),
		userinfo: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fhirgate_extauth_userinfo_requests_total",
			Help: "Userinfo calls by provider issuer and HTTP status (or timeout, error).",
		}, []string{"provider", "status"}),
		userinfoSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fhirgate_extauth_userinfo_duration_seconds",
			Help:    "Userinfo call latency by provider issuer.",
			Buckets: prometheus.DefBuckets,
		}, []string{"provider"}),
		flights: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fhirgate_extauth_validations_total",
			Help: "Validations run after a cache miss (one per singleflight group).",
		}),
		collapsed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fhirgate_extauth_singleflight_collapsed_total",
			Help: "Cache misses that waited for another request's validation instead of running their own.",
		}),
		signatures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fhirgate_extauth_signature_checks_total",
			Help: "Local JWKS signature checks by provider issuer and result (ok or a reason).",
		}, []string{"provider", "result"}),
		clusterLocks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fhirgate_extauth_cluster_lock_total",
			Help: "Cluster-wide validation locks by result: acquired, or waited (another instance was validating).",
		}, []string{"result"}),
	}
	m.cacheHit = m.cache.WithLabelValues("hit")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.cache, m.cacheWrites, m.userinfo, m.userinfoSeconds, m.flights, m.collapsed, m.signatures, m.clusterLocks} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
