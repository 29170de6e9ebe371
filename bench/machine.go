package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where the figures were taken.
type Machine struct {
	CPUs       int
	CPUModel   string
	MemoryMiB  int64
	PostgreSQL string
	Go         string
	LoadStart  string // 1, 5 and 15 minute load averages when the run began
	LoadEnd    string
	// LoadMean and LoadMax summarise the 1-minute load average sampled
	// every 15 seconds during the run: the benchmark's own load included.
	LoadMean, LoadMax float64
}

func describeMachine(binDir string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadAverage()}
	if out, err := exec.Command(filepath.Join(binDir, "postgres"), "--version").Output(); err == nil {
		m.PostgreSQL = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "postgres (PostgreSQL)"))
	}
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	if kb, err := strconv.ParseInt(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal"), " kB"), 10, 64); err == nil {
		m.MemoryMiB = kb >> 10
	}
	return m
}

// procField returns the value of the first "name: value" line of a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// loadSampler samples the 1-minute load average until stopped.
type loadSampler struct {
	stopc chan struct{}
	done  chan struct{}
	sum   float64
	n     int
	max   float64
}

func startLoadSampler(every time.Duration) *loadSampler {
	s := &loadSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *loadSampler) sample() {
	f := strings.Fields(loadAverage())
	if len(f) == 0 {
		return
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return
	}
	s.sum += v
	s.n++
	s.max = max(s.max, v)
}

// stop ends sampling and returns the mean and the maximum.
func (s *loadSampler) stop() (mean, peak float64) {
	close(s.stopc)
	<-s.done
	if s.n == 0 {
		return 0, 0
	}
	return s.sum / float64(s.n), s.max
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Line is the machine in one line.
func (m Machine) Line() string {
	return fmt.Sprintf("%d CPUs (%s), %d MiB memory, PostgreSQL %s, %s; load average %s at start, %s at end; 1-minute load during the run: mean %.1f, max %.1f",
		m.CPUs, m.CPUModel, m.MemoryMiB, m.PostgreSQL, m.Go, m.LoadStart, m.LoadEnd, m.LoadMean, m.LoadMax)
}

// Markdown is the machine as Markdown.
func (m Machine) Markdown() string {
	return fmt.Sprintf("%d CPUs (%s), %d MiB memory, PostgreSQL %s, Go %s; load average (1, 5, 15 min) %s at start, %s at end; 1-minute load average during the run (sampled every 15 s, the benchmark's own load included): mean %.1f, max %.1f",
		m.CPUs, m.CPUModel, m.MemoryMiB, m.PostgreSQL, strings.TrimPrefix(m.Go, "go"), m.LoadStart, m.LoadEnd, m.LoadMean, m.LoadMax)
}
