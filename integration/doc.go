// Package integration holds the end-to-end tests of pgactive-go and the harness they share.
//
// Stage: none of the data flow; it drives every stage from outside, against real processes.
//
// Inputs: the PostgreSQL 15 binaries installed on the machine (found by [PGBinDir]; `go tool task deps`
// installs them) and the nats-server library linked into the test binary.
//
// Outputs: throwaway resources owned by one test and released by its t.Cleanup:
//   - [StartPostgres]: a fresh PostgreSQL cluster (initdb, wal_level=logical, track_commit_timestamp=on,
//     scram-sha-256 over TCP on 127.0.0.1 with a random password, a random free port). When the test runs
//     as root, the cluster runs as the postgres OS user, because PostgreSQL refuses to run as root.
//   - [StartNATS]: an in-process nats-server with JetStream on a random port, with its store in a temporary
//     directory, which can be shut down and restarted on the same port and store for crash tests.
//   - [WaitFor], [TableRows] and [WaitSameRows]: polling with a deadline, and the row fingerprint used to
//     compare nodes.
//
// Invariants: every helper takes the test's testing.TB, calls t.Helper, and fails the test on error
// (never silently); helpers that can fail the test must be called on the test goroutine. Tests never sleep
// to "let it replicate": they wait for a condition with a deadline. Faults are injected by stopping or
// killing the real processes (Postgres.Stop, NATS.Shutdown), never with mock servers.
package integration
