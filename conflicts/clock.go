package conflicts

import "time"

// DefaultSkewTolerance is how far ahead of the local clock a remote commit
// time may be before FutureCommit reports it.
const DefaultSkewTolerance = time.Second

// FutureCommit reports how far a remote commit time lies ahead of now and
// whether that is more than tolerance. The apply side passes its own clock
// reading as now and logs a warning when warn is true: a node whose clock
// runs ahead wins conflicts it should lose (see docs/conflicts.md).
func FutureCommit(commit, now time.Time, tolerance time.Duration) (ahead time.Duration, warn bool) {
	ahead = commit.Sub(now)
	if ahead < 0 {
		ahead = 0
	}
	return ahead, ahead > tolerance
}
