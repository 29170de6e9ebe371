package monitor

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Set holds the monitors of the agents running in a process, as agents start
// and stop. The zero value is empty and ready; a nil *Set ignores Add and
// Remove. It is safe for concurrent use.
type Set struct {
	mu sync.Mutex
	ms []*Monitor
}

// Add lists m.
func (s *Set) Add(m *Monitor) {
	if s == nil || m == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ms = append(s.ms, m)
}

// Remove unlists m.
func (s *Set) Remove(m *Monitor) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.ms {
		if x == m {
			s.ms = append(s.ms[:i], s.ms[i+1:]...)
			return
		}
	}
}

// List returns the monitors listed now.
func (s *Set) List() []*Monitor {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Monitor(nil), s.ms...)
}

// HandlerConfig configures the HTTP endpoint of a process.
type HandlerConfig struct {
	// Monitors returns the monitors of the agents running now (for example
	// Set.List).
	Monitors func() []*Monitor
	// Agents is how many agents the process is to run (one per database);
	// /readyz answers 503 until that many are ready (default 1).
	Agents int
	Log    *slog.Logger
}

// NewHandler serves:
//
//	GET /lag      the group's lag rows, a JSON array of Row
//	GET /metrics  Prometheus text format, from a registry of its own
//	GET /healthz  200 when every worker of every agent runs, else 503 naming those that do not
//	GET /readyz   200 once every agent is ready, else 503
func NewHandler(cfg HandlerConfig) http.Handler {
	if cfg.Agents <= 0 {
		cfg.Agents = 1
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{monitors: cfg.Monitors, d: newDescs()})
	h := &handler{cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /lag", h.lag)
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /readyz", h.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	return mux
}

type handler struct{ cfg HandlerConfig }

func (h *handler) lag(w http.ResponseWriter, _ *http.Request) {
	rows := []Row{}
	for _, g := range clusterRows(h.cfg.Monitors(), time.Now()) {
		rows = append(rows, g.rows...)
	}
	writeJSON(w, http.StatusOK, rows)
}

// AgentHealth is the state of one agent's workers, as /healthz reports it.
type AgentHealth struct {
	Group   string `json:"group"`
	Node    string `json:"node"`
	Capture bool   `json:"capture_running"`
	// Apply says, by origin node, whether its apply worker runs.
	Apply map[string]bool `json:"apply_running"`
}

// Health is the body of /healthz.
type Health struct {
	// Status is "ok" or "failing".
	Status string        `json:"status"`
	Agents []AgentHealth `json:"agents"`
	// NotRunning names each worker that does not run, with its last error.
	NotRunning []string `json:"not_running,omitempty"`
}

// health checks every worker of every agent.
func health(ms []*Monitor) Health {
	out := Health{Status: "ok", Agents: []AgentHealth{}}
	for _, m := range ms {
		a := AgentHealth{Group: m.Group(), Node: m.Node(), Apply: map[string]bool{}}
		if c := m.Agent().Capture(); c != nil {
			a.Capture = c.Status().Running.Load()
		}
		if !a.Capture {
			out.NotRunning = append(out.NotRunning, "node "+m.Node()+": capture")
		}
		ws := m.Agent().Appliers()
		origins := make([]string, 0, len(ws))
		for o := range ws {
			origins = append(origins, o)
		}
		sort.Strings(origins)
		for _, o := range origins {
			st := ws[o].Status()
			a.Apply[o] = st.Running.Load()
			if !a.Apply[o] {
				what := "node " + m.Node() + ": apply of " + o
				if e := st.LastError(); e != "" {
					what += " (last error: " + e + ")"
				}
				out.NotRunning = append(out.NotRunning, what)
			}
		}
		out.Agents = append(out.Agents, a)
	}
	if len(out.NotRunning) > 0 {
		out.Status = "failing"
	}
	return out
}

func (h *handler) healthz(w http.ResponseWriter, _ *http.Request) {
	hl := health(h.cfg.Monitors())
	code := http.StatusOK
	if hl.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, hl)
}

// Readiness is the body of /readyz.
type Readiness struct {
	Ready    bool     `json:"ready"`
	Expected int      `json:"expected"`
	Agents   []string `json:"ready_agents"`
	Waiting  []string `json:"waiting,omitempty"`
}

func (h *handler) readyz(w http.ResponseWriter, _ *http.Request) {
	r := Readiness{Expected: h.cfg.Agents, Agents: []string{}}
	for _, m := range h.cfg.Monitors() {
		if m.Ready() {
			r.Agents = append(r.Agents, m.Node())
		} else {
			r.Waiting = append(r.Waiting, m.Node())
		}
	}
	r.Ready = len(r.Agents) >= r.Expected && len(r.Waiting) == 0
	code := http.StatusOK
	if !r.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, r)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
