package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/apply"
	"github.com/pgactive-go/pgactive/stream"
)

// ErrDatabaseNotEmpty is wrapped by Join's error when the joining database
// already holds tables.
var ErrDatabaseNotEmpty = errors.New("the joining database is not empty")

// Join phases, in the order Join goes through them.
const (
	PhaseRegister = "register"  // member record and consumers
	PhaseSnapshot = "snapshot"  // exported snapshot and origin positions on the source
	PhaseSchema   = "schema"    // pg_dump and pg_restore of the pre-data section
	PhaseCopy     = "copy"      // table data, in parallel
	PhasePostData = "post-data" // indexes, constraints, triggers; sequences
	PhaseOrigins  = "origins"   // where apply starts, per origin
	PhaseDone     = "done"
)

// JoinConfig is what Join needs.
type JoinConfig struct {
	Group string
	Node  string // the joining node's name
	// DSN of the joining (local) database, credentials resolved. Never logged.
	DSN        string
	SourceNode string // the member to copy from
	// SourceDSN of the source's database, credentials resolved. Never logged.
	SourceDSN string
	Layout    *stream.Layout
	// PGBinDir holds pg_dump and pg_restore (default: $PG_BINDIR,
	// /usr/lib/postgresql/15/bin, then PATH).
	PGBinDir string
	// Workers is the number of connections to each database that copy data
	// at once, and of indexes built at once after the copy (default: one
	// more than the CPUs of this machine, at most 8).
	Workers int
	// ChunkSize is the size of the ranges of heap pages that tables of at
	// least one and a half times this size are split into, so that several
	// workers copy them (default: the data cut into 4 chunks per worker, at
	// least 64 MiB). Splitting needs PostgreSQL 14 or later on the source.
	ChunkSize int64
	// Progress, if set, is called on every phase change and at least every
	// second while data is copied, from one goroutine at a time.
	Progress func(JoinProgress)
	Log      *slog.Logger
}

// Validate reports a configuration Join cannot run with.
func (c *JoinConfig) Validate() error {
	switch {
	case c.Group == "" || c.Node == "" || c.DSN == "":
		return errors.New("join: group, node name and DSN are required")
	case c.SourceNode == "" || c.SourceDSN == "":
		return errors.New("join: the source node's name and DSN are required")
	case c.SourceNode == c.Node:
		return fmt.Errorf("join: node %q cannot join from itself", c.Node)
	case c.Layout == nil || c.Layout.JS == nil:
		return errors.New("join: a JetStream layout is required")
	case c.Layout.Group != c.Group:
		return fmt.Errorf("join: the layout is for group %q, not %q", c.Layout.Group, c.Group)
	case c.Workers < 0:
		return fmt.Errorf("join: %d workers", c.Workers)
	case c.ChunkSize < 0:
		return fmt.Errorf("join: chunk size %d", c.ChunkSize)
	}
	return nil
}

// JoinProgress is the state of a join, as reported to JoinConfig.Progress.
type JoinProgress struct {
	Phase      string
	DBName     string // the joining database
	SourceNode string
	// TotalBytes is the size of the source's tables; CopiedBytes how much of
	// it is copied. CopiedBytes stays below 99% of TotalBytes until the copy
	// is done, then equals it.
	TotalBytes, CopiedBytes int64
	Started, Finished       time.Time // Finished is zero until the join is done
}

// Percent is the share of the data copied, 0 to 100.
func (p JoinProgress) Percent() float64 {
	if p.TotalBytes > 0 {
		return 100 * float64(p.CopiedBytes) / float64(p.TotalBytes)
	}
	switch p.Phase {
	case PhasePostData, PhaseOrigins, PhaseDone:
		return 100 // nothing to copy, and it is copied
	}
	return 0
}

// Join makes the empty database at cfg.DSN a copy of cfg.SourceNode's that
// misses no change of any member (DESIGN §7.5):
//
//  1. it refuses a database that holds tables, changing nothing;
//  2. it records the node (status "i") and creates its stream and the
//     consumers linking it with every member, before the snapshot, so no
//     stream drops what the node needs;
//  3. on the source, holding the join lock that applied transactions take
//     shared, it exports a snapshot from a temporary slot and reads how far
//     the source has applied every other member;
//  4. it restores the source's schema (without pgactive's own objects) and
//     copies every table inside the snapshot, large tables in ranges of
//     pages, with several connections to either side, then builds indexes,
//     constraints and triggers, several at once;
//  5. it sets the joining database's replication origins to where the
//     snapshot stands: the consistent point for the source's own changes,
//     the positions read in 3 for the others.
//
// Join starts no workers and creates no slot. The caller then runs the
// node's Agent, which creates the slot and publication, marks the node
// ready and applies every member from where the copy ends. No application
// may write to the joining database between Join and the agent being ready:
// capture starts with the agent's slot.
//
// On failure the error says what to do, and what Join created in NATS (the
// member record, the node's stream, the consumers both ways) is deleted, so
// no stream keeps messages for the node. A failure up to the restore of
// the schema's first part (which runs in one transaction) leaves the joining
// database as it was; a later one leaves a partial copy (schema, some
// tables, replication origins pgactive_<group>_copy_<i>), and the database
// must be dropped and re-created before joining again. The source keeps
// nothing: its temporary slot goes with the connection.
func Join(ctx context.Context, cfg JoinConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Workers == 0 {
		cfg.Workers = defaultCopyWorkers()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	j := &joiner{cfg: cfg, log: cfg.Log.With("node", cfg.Node, "group", cfg.Group, "source", cfg.SourceNode)}
	j.progress.SourceNode, j.progress.Started = cfg.SourceNode, time.Now()
	return j.run(ctx)
}

// joiner carries one Join.
type joiner struct {
	cfg JoinConfig
	log *slog.Logger

	mu       sync.Mutex // serialises Progress calls
	progress JoinProgress

	kv         jetstream.KeyValue
	registered bool // the member record, stream or consumers may exist
	members    []Member
	restoring  bool   // the joining database holds part of the copy
	dboid      uint32 // the joining database's OID, which names its replication origins
}

// snapshot is the source's exported snapshot and where it stands.
type snapshot struct {
	repl       *pgconn.PgConn // keeps the snapshot (and the temporary slot) alive
	slot       string
	name       string
	consistent pglogrepl.LSN
	applied    map[string]pglogrepl.LSN // member → how far the source applied it
}

func (j *joiner) run(ctx context.Context) (err error) {
	binDir, err := findPGBinDir(j.cfg.PGBinDir)
	if err != nil {
		return err
	}
	local, err := joinConnect(ctx, j.cfg.DSN, j.cfg.Node)
	if err != nil {
		return err
	}
	defer local.Close(context.WithoutCancel(ctx))
	id, err := Check(ctx, local, j.cfg.Node)
	if err != nil {
		return err
	}
	j.progress.DBName = id.DBName
	j.dboid = id.DBOID
	if err := checkEmpty(ctx, local, j.cfg.Node, id.DBName); err != nil {
		return err
	}
	kv, err := j.openGroup(ctx)
	if err != nil {
		return err
	}
	j.kv = kv
	self, err := j.checkMembers(ctx, kv, id)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			j.abandon(context.WithoutCancel(ctx))
			err = j.explain(err)
		}
	}()

	j.report(PhaseRegister)
	if err := j.register(ctx, kv, self); err != nil {
		return err
	}
	j.report(PhaseSnapshot)
	snap, err := j.exportSnapshot(ctx)
	if err != nil {
		return err
	}
	defer snap.close(context.WithoutCancel(ctx))
	return j.restore(ctx, local, binDir, snap)
}

// restore copies the schema and data and sets the origins.
func (j *joiner) restore(ctx context.Context, local *pgx.Conn, binDir string, snap *snapshot) error {
	src, err := joinConnect(ctx, j.cfg.SourceDSN, j.cfg.SourceNode)
	if err != nil {
		return err
	}
	defer src.Close(context.WithoutCancel(ctx))
	inv, err := j.inventory(ctx, src, local, snap)
	if err != nil {
		return err
	}
	tr := newCopyTracker(inv.tables, j.cfg.Workers)
	j.setTotal(tr.total)

	j.report(PhaseSchema)
	schema, err := j.restorePreData(ctx, binDir, snap, inv.servers)
	if err != nil {
		return err
	}
	defer schema.remove()

	j.report(PhaseCopy)
	started := time.Now()
	chunks := planChunks(inv.tables, chunkPages(j.cfg.ChunkSize, inv.tables, j.cfg.Workers), inv.tidRange)
	split := splitTables(chunks)
	if err := lockTables(ctx, src, split); err != nil {
		return err
	}
	if err := j.copyWithProgress(ctx, snap, chunks, tr); err != nil {
		return err
	}
	if _, err := src.Exec(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("end snapshot transaction: %w", err)
	}
	j.log.Info("data copied", "tables", len(inv.tables), "chunks", len(chunks), "split", len(split),
		"binary", inv.binary, "bytes", tr.total, "elapsed", time.Since(started).Round(time.Millisecond))
	snap.close(ctx) // the snapshot is no longer needed: let the source go on

	j.report(PhasePostData)
	started = time.Now()
	if err := restorePostData(ctx, schema.dst, schema.dump, schema.list, j.cfg.Workers); err != nil {
		return err
	}
	j.log.Info("post-data restored", "elapsed", time.Since(started).Round(time.Millisecond))
	if err := j.copySequences(ctx, src, local); err != nil {
		return err
	}
	if err := j.refreshViews(ctx, src, local); err != nil {
		return err
	}

	j.report(PhaseOrigins)
	if err := j.setOrigins(ctx, local, snap); err != nil {
		return err
	}
	j.mu.Lock()
	j.progress.Finished = time.Now()
	j.mu.Unlock()
	j.report(PhaseDone)
	j.log.Info("join copy finished", "elapsed", time.Since(j.progress.Started).Round(time.Millisecond))
	return nil
}

// sourceInventory is what the copy needs to know about the source.
type sourceInventory struct {
	tables  []copyTable
	servers []string // of pgactive_fdw
	// tidRange is set when the source scans ctid ranges (PostgreSQL 14+).
	tidRange bool
	// binary is set when both servers run the same major version: the
	// tables whose column types allow it are then copied in binary format.
	binary bool
}

// inventory lists, inside the snapshot, the tables to copy and the servers
// of pgactive_fdw, and compares the servers' versions. It leaves src inside
// the snapshot's transaction, for lockTables.
func (j *joiner) inventory(ctx context.Context, src, local *pgx.Conn, snap *snapshot) (*sourceInventory, error) {
	srcVersion, err := serverVersion(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("node %q: %w", j.cfg.SourceNode, err)
	}
	localVersion, err := serverVersion(ctx, local)
	if err != nil {
		return nil, fmt.Errorf("node %q: %w", j.cfg.Node, err)
	}
	if err := beginSnapshot(ctx, src, snap.name); err != nil {
		return nil, err
	}
	tables, err := listTables(ctx, src)
	if err != nil {
		return nil, err
	}
	servers, err := pgactiveServers(ctx, src)
	if err != nil {
		return nil, err
	}
	inv := &sourceInventory{tables: tables, servers: servers,
		tidRange: srcVersion >= tidRangeVersion, binary: srcVersion/10000 == localVersion/10000}
	for i := range inv.tables {
		inv.tables[i].binary = inv.binary && inv.tables[i].binaryTypes
	}
	return inv, nil
}

// serverVersion is the server's server_version_num (150018 for 15.18).
func serverVersion(ctx context.Context, conn *pgx.Conn) (int, error) {
	var v int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&v); err != nil {
		return 0, fmt.Errorf("read the server version: %w", err)
	}
	return v, nil
}

// schemaDump is the source's schema as of the snapshot, on local disk.
type schemaDump struct {
	dir, dump, list string // the list leaves pgactive's own objects out
	dst             *pgTool
}

func (d *schemaDump) remove() { os.RemoveAll(d.dir) }

// restorePreData dumps the source's schema and restores its pre-data
// section (types, functions, tables, sequences) into the joining database.
func (j *joiner) restorePreData(ctx context.Context, binDir string, snap *snapshot, servers []string) (*schemaDump, error) {
	srcTool, err := newPGTool(binDir, j.cfg.SourceDSN)
	if err != nil {
		return nil, fmt.Errorf("node %q: %w", j.cfg.SourceNode, err)
	}
	dstTool, err := newPGTool(binDir, j.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("node %q: %w", j.cfg.Node, err)
	}
	dir, err := os.MkdirTemp("", "pgactive-join-")
	if err != nil {
		return nil, fmt.Errorf("create a directory for the schema dump: %w", err)
	}
	d := &schemaDump{dir: dir, dump: filepath.Join(dir, "schema.dump"), list: filepath.Join(dir, "restore.list"), dst: dstTool}
	if err := dumpSchema(ctx, srcTool, snap.name, d.dump); err != nil {
		d.remove()
		return nil, err
	}
	dropped, err := restoreList(ctx, dstTool, d.dump, d.list, servers)
	if err != nil {
		d.remove()
		return nil, err
	}
	j.log.Debug("left pgactive's own objects out of the restore", "entries", len(dropped))
	// One transaction: a failure leaves the joining database as it was.
	if err := restoreSection(ctx, dstTool, d.dump, d.list, "pre-data"); err != nil {
		d.remove()
		return nil, err
	}
	j.restoring = true
	return d, nil
}

// joinConnect opens a connection named pgactive:join, so that it is not
// taken for an attached agent.
func joinConnect(ctx context.Context, dsn, node string) (*pgx.Conn, error) {
	conn, err := Connect(ctx, dsn, node)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "SET application_name = 'pgactive:join'"); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("node %q: set application name: %w", node, err)
	}
	return conn, nil
}

// checkEmpty refuses a database that holds tables, views or sequences
// outside the system schemas and pgactive's own.
func checkEmpty(ctx context.Context, conn *pgx.Conn, node, db string) error {
	rows, err := conn.Query(ctx, `SELECT n.nspname::text || '.' || c.relname::text FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p', 'f', 'm', 'v', 'S')
			AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
			AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
		ORDER BY 1 LIMIT 6`, ownSchema)
	if err != nil {
		return fmt.Errorf("node %q: look for tables: %w", node, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("node %q: look for tables: %w", node, err)
	}
	if len(names) == 0 {
		return nil
	}
	held := names
	if len(names) > 5 {
		held = append(names[:5:5], "...")
	}
	return fmt.Errorf("%w: node %q: database %q holds %v: join into an empty database (CREATE DATABASE), or drop these tables first",
		ErrDatabaseNotEmpty, node, db, held)
}

// openGroup opens the group's bucket without creating it.
func (j *joiner) openGroup(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := j.cfg.Layout.JS.KeyValue(ctx, stream.BucketName(j.cfg.Group))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("group %q does not exist on this NATS server: create it on the source node first (pgactive_create_group), or check the group name and NATS URL", j.cfg.Group)
	}
	if err != nil {
		return nil, fmt.Errorf("open the bucket of group %q: %w", j.cfg.Group, err)
	}
	return kv, nil
}

// checkMembers reads the group's members and checks that the node can join
// from the source. It returns the joining node's record.
func (j *joiner) checkMembers(ctx context.Context, kv jetstream.KeyValue, id Identity) (Member, error) {
	members, err := Members(ctx, kv)
	if err != nil {
		return Member{}, err
	}
	if err := checkNotMember(members, j.cfg.Node, j.cfg.Group, id); err != nil {
		return Member{}, err
	}
	var source *Member
	for i, m := range members {
		switch {
		case m.Name == j.cfg.SourceNode:
			source = &members[i]
		case m.Name == j.cfg.Node && m.Status != StateBeginning && m.Status != StateCopying:
			return Member{}, fmt.Errorf("node name %q is already used in group %q (status %s): choose another node name", m.Name, j.cfg.Group, m.Status)
		}
	}
	if source == nil {
		return Member{}, fmt.Errorf("node %q is not a member of group %q: join from one of its members", j.cfg.SourceNode, j.cfg.Group)
	}
	if source.Status != StateReady {
		return Member{}, fmt.Errorf("node %q of group %q is not ready (status %s): join from a ready member", source.Name, j.cfg.Group, source.Status)
	}
	j.members = slices.DeleteFunc(members, func(m Member) bool { return m.Name == j.cfg.Node || m.Status == StateDetached })
	return Member{Name: j.cfg.Node, Group: j.cfg.Group, SysID: id.SysID, Timeline: id.Timeline,
		DBOID: id.DBOID, DBName: id.DBName, Status: StateCopying, DSN: RedactDSN(j.cfg.DSN)}, nil
}

// register records the node and links it with every member both ways, as
// Agent.link does: from then on, every member's stream keeps what the node
// has not applied.
func (j *joiner) register(ctx context.Context, kv jetstream.KeyValue, self Member) error {
	l := j.cfg.Layout
	j.registered = true
	if _, err := l.EnsureStream(ctx, self.Name); err != nil {
		return err
	}
	if err := PutMember(ctx, kv, self); err != nil {
		return err
	}
	for _, m := range j.members {
		if _, err := l.EnsureConsumer(ctx, self.Name, m.Name); err != nil {
			return err
		}
		if _, err := l.EnsureStream(ctx, m.Name); err != nil {
			return err
		}
		if _, err := l.EnsureConsumer(ctx, m.Name, self.Name); err != nil {
			return err
		}
	}
	return nil
}

// exportSnapshot takes the source's join lock, exports a snapshot from a
// temporary slot and reads the source's applied position of every other
// member, then releases the lock. Applied transactions hold the lock shared
// from before they have an xid until they commit, so the positions read are
// exactly what the snapshot contains.
func (j *joiner) exportSnapshot(ctx context.Context) (*snapshot, error) {
	lock, err := joinConnect(ctx, j.cfg.SourceDSN, j.cfg.SourceNode)
	if err != nil {
		return nil, err
	}
	defer lock.Close(context.WithoutCancel(ctx)) // also releases the lock on error
	if _, err := lock.Exec(ctx, "SELECT pg_advisory_lock($1)", apply.JoinLockKey); err != nil {
		return nil, fmt.Errorf("take the join lock on node %q: %w", j.cfg.SourceNode, err)
	}
	snap, err := j.createSlot(ctx)
	if err != nil {
		return nil, err
	}
	snap.applied = map[string]pglogrepl.LSN{}
	var srcDBOID uint32
	for _, m := range j.members {
		if m.Name == j.cfg.SourceNode {
			srcDBOID = m.DBOID
		}
	}
	for _, m := range j.members {
		if m.Name == j.cfg.SourceNode {
			continue
		}
		lsn, err := originProgress(ctx, lock, apply.OriginName(srcDBOID, m.Name), apply.LegacyOriginName(j.cfg.Group, m.Name))
		if err != nil {
			snap.close(ctx)
			return nil, fmt.Errorf("node %q: %w", j.cfg.SourceNode, err)
		}
		snap.applied[m.Name] = lsn
	}
	if _, err := lock.Exec(ctx, "SELECT pg_advisory_unlock($1)", apply.JoinLockKey); err != nil {
		snap.close(ctx)
		return nil, fmt.Errorf("release the join lock on node %q: %w", j.cfg.SourceNode, err)
	}
	j.log.Info("snapshot exported", "lsn", snap.consistent, "slot", snap.slot)
	return snap, nil
}

func (j *joiner) createSlot(ctx context.Context) (*snapshot, error) {
	cfg, err := pgconn.ParseConfig(j.cfg.SourceDSN)
	if err != nil {
		return nil, fmt.Errorf("node %q: the connection string is not valid: %w", j.cfg.SourceNode, redactParseError(err))
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "pgactive:join"
	repl, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("node %q: open a replication connection (pg_hba.conf must allow replication connections for user %q): %w", j.cfg.SourceNode, cfg.User, err)
	}
	slot, err := tempSlotName()
	if err != nil {
		repl.Close(ctx)
		return nil, err
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication})
	if err != nil {
		repl.Close(ctx)
		return nil, fmt.Errorf("node %q: create temporary slot %q (is a replication slot free? raise max_replication_slots): %w", j.cfg.SourceNode, slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil || lsn == 0 {
		repl.Close(ctx)
		return nil, fmt.Errorf("node %q: temporary slot %q: consistent point %q: %w", j.cfg.SourceNode, slot, res.ConsistentPoint, err)
	}
	return &snapshot{repl: repl, slot: slot, name: res.SnapshotName, consistent: lsn}, nil
}

// close ends the replication connection, which drops the temporary slot
// and ends the snapshot.
func (s *snapshot) close(ctx context.Context) {
	if s.repl != nil {
		s.repl.Close(ctx)
		s.repl = nil
	}
}

func tempSlotName() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("name the temporary slot: %w", err)
	}
	return "pgactive_join_" + hex.EncodeToString(b), nil
}

// originProgress is the durable position of a replication origin, or 0 if
// the origin does not exist or has none.
func originProgress(ctx context.Context, conn *pgx.Conn, origin, legacy string) (pglogrepl.LSN, error) {
	// A source upgraded from a version that named origins without the
	// database holds the progress under the legacy name until its apply
	// worker takes it over.
	var lsn *string
	err := conn.QueryRow(ctx, `SELECT coalesce(
		CASE WHEN pg_replication_origin_oid($1) IS NOT NULL THEN pg_replication_origin_progress($1, false) END,
		CASE WHEN pg_replication_origin_oid($2) IS NOT NULL THEN pg_replication_origin_progress($2, false) END)::text`,
		origin, legacy).Scan(&lsn)
	if err != nil {
		return 0, fmt.Errorf("read progress of origin %q: %w", origin, err)
	}
	if lsn == nil {
		return 0, nil
	}
	return pglogrepl.ParseLSN(*lsn)
}

// pgactiveServers lists the foreign servers of pgactive_fdw, which the
// restore leaves out with their user mappings.
func pgactiveServers(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT s.srvname::text FROM pg_foreign_server s
		JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw WHERE w.fdwname = $1`, ownFDW)
	if err != nil {
		return nil, fmt.Errorf("list the servers of %s: %w", ownFDW, err)
	}
	servers, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the servers of %s: %w", ownFDW, err)
	}
	return servers, nil
}

// startPositions is where the joining node's apply starts for each member:
// the source's own transactions that commit at or after the consistent
// point are not in the snapshot (apply skips what is at or below the
// origin's position), and the others are at what the source had applied.
func startPositions(source string, snap *snapshot) map[string]pglogrepl.LSN {
	out := map[string]pglogrepl.LSN{source: snap.consistent - 1}
	for m, lsn := range snap.applied {
		out[m] = lsn
	}
	return out
}

// setOrigins creates the joining database's replication origin of every
// member and sets its position.
func (j *joiner) setOrigins(ctx context.Context, conn *pgx.Conn, snap *snapshot) error {
	pos := startPositions(j.cfg.SourceNode, snap)
	names := make([]string, 0, len(pos))
	for m := range pos {
		names = append(names, m)
	}
	slices.Sort(names)
	for _, m := range names {
		origin := apply.OriginName(j.dboid, m)
		_, err := conn.Exec(ctx, `SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL`, origin)
		if err != nil {
			return fmt.Errorf("create replication origin %q: %w", origin, err)
		}
		if _, err := conn.Exec(ctx, `SELECT pg_replication_origin_advance($1, $2::text::pg_lsn)`, origin, pos[m].String()); err != nil {
			return fmt.Errorf("set replication origin %q to %s: %w", origin, pos[m], err)
		}
		j.log.Info("apply start set", "origin", m, "lsn", pos[m])
	}
	return nil
}

// copyWithProgress copies the data, reporting progress every second.
func (j *joiner) copyWithProgress(ctx context.Context, snap *snapshot, chunks []copyChunk, tr *copyTracker) error {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				j.reportCopied(tr.copied())
			}
		}
	})
	err := j.copyData(ctx, snap, chunks, tr)
	close(stop)
	wg.Wait()
	if err == nil {
		j.reportCopied(tr.total)
	}
	return err
}

func (j *joiner) setTotal(total int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.progress.TotalBytes = total
}

// reportCopied reports copied bytes: never less than before, never 99% or
// more of the total before it is all copied.
func (j *joiner) reportCopied(copied int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	p := &j.progress
	if copied < p.TotalBytes {
		copied = min(copied, p.TotalBytes*99/100)
	}
	p.CopiedBytes = max(p.CopiedBytes, min(copied, p.TotalBytes))
	if j.cfg.Progress != nil {
		j.cfg.Progress(*p)
	}
}

// report enters phase.
func (j *joiner) report(phase string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.progress.Phase = phase
	j.log.Info("join phase", "phase", phase)
	if j.cfg.Progress != nil {
		j.cfg.Progress(j.progress)
	}
}

// abandon undoes the registration after a failed join: the member record
// goes first (members stop applying the node), then the consumers both ways,
// so that no stream keeps messages for the node, then its stream.
func (j *joiner) abandon(ctx context.Context) {
	if !j.registered {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	l, node := j.cfg.Layout, j.cfg.Node
	var errs []error
	if err := j.kv.Delete(ctx, stream.NodeKey(node)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		errs = append(errs, fmt.Errorf("delete member record: %w", err))
	}
	for _, m := range j.members {
		errs = append(errs, l.DeleteConsumer(ctx, m.Name, node), l.DeleteConsumer(ctx, node, m.Name))
	}
	errs = append(errs, l.DeleteStream(ctx, node))
	if err := errors.Join(errs...); err != nil {
		j.log.Warn("could not undo the registration of the failed join", "err", err)
	}
}

// explain adds what to do after a failure that changed the joining database.
func (j *joiner) explain(err error) error {
	err = fmt.Errorf("join node %q from %q: %w", j.cfg.Node, j.cfg.SourceNode, err)
	if j.restoring {
		return fmt.Errorf("%w (database %q now holds a partial copy: drop and re-create it before joining again)", err, j.progress.DBName)
	}
	return err
}
