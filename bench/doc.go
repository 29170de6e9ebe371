// Package bench measures pgactive-go against PostgreSQL's native logical
// replication (publication and subscription) on the same machine, in the
// same run, and reports the ratios.
//
// Stage: none of the data flow; it drives the whole of it from outside. It
// starts throwaway PostgreSQL 15 clusters, an embedded NATS JetStream server
// and pgactive-go agents (in this process, or as separate processes where
// their memory is measured), runs each scenario once against pgactive-go and
// once against native replication on fresh clusters, and returns a table of
// figures.
//
// Scenarios: throughput (one origin, single-row inserts then updates, live
// and from a backlog), latency (commit-to-visible at a fixed rate), three
// nodes all writing, join (initial copy versus pg_dump | pg_restore) and one
// big transaction.
//
// Invariants: every cluster, server, process and directory a scenario starts
// is removed when the scenario ends, on error and on cancellation too; a
// figure is measured on what the target shows (rows visible to a query, or
// to LISTEN), never on what a sender believes it sent.
package bench
