package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTick = 10 * time.Millisecond

// procCPU is the CPU time of a process from /proc/<pid>/stat: its own and,
// with children, that of the children it has waited for.
func procCPU(pid int, children bool) (time.Duration, int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is the state, field 3 of stat(5)
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, _ := strconv.Atoi(f[1])
	var ticks int64
	last := 12
	if children {
		last = 14
	}
	for k := 11; k <= last; k++ {
		v, _ := strconv.ParseInt(f[k], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * clockTick, ppid, nil
}

// clusterCPU is the CPU time the cluster's server processes have used: the
// postmaster's own and its reaped children's, plus its live children's.
func clusterCPU(c *cluster) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(c.data(), "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("read postmaster.pid of %s: %w", c.name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid of %s: %w", c.name, err)
	}
	total, _, err := procCPU(pid, true)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		t, ppid, err := procCPU(child, false)
		if err == nil && ppid == pid {
			total += t
		}
	}
	return total, nil
}

// selfCPU is the CPU time of this process, all threads.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter samples the CPU time of this process and of clusters.
type cpuMeter struct {
	clusters []*cluster
	self     time.Duration
	start    []time.Duration
}

func startCPUMeter(clusters ...*cluster) *cpuMeter {
	m := &cpuMeter{clusters: clusters, self: selfCPU()}
	for _, c := range clusters {
		t, _ := clusterCPU(c)
		m.start = append(m.start, t)
	}
	return m
}

// cpuUse is what a cpuMeter measured.
type cpuUse struct {
	self     time.Duration   // this process: agents, NATS and load clients
	clusters []time.Duration // each cluster's server processes
}

func (u cpuUse) total() time.Duration {
	t := u.self
	for _, c := range u.clusters {
		t += c
	}
	return t
}

func (m *cpuMeter) stop() cpuUse {
	u := cpuUse{self: selfCPU() - m.self}
	for i, c := range m.clusters {
		t, _ := clusterCPU(c)
		u.clusters = append(u.clusters, t-m.start[i])
	}
	return u
}

// peakRSS is the peak resident set size of a process (VmHWM), in bytes.
func peakRSS(pid int) (int64, error) {
	v := procField(fmt.Sprintf("/proc/%d/status", pid), "VmHWM")
	if v == "" {
		return 0, fmt.Errorf("no VmHWM for process %d", pid)
	}
	kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, "kB")), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("VmHWM of process %d: %w", pid, err)
	}
	return kb << 10, nil
}
