package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgactive-go/pgactive/stream"
)

// Node states, as pgactive_nodes.node_status has them.
const (
	StateBeginning = "b"
	StateCopying   = "i"
	StateCatchup   = "c"
	StateOutbound  = "o"
	StateReady     = "r"
	StateDetached  = "k"
)

// Member is a node's record in the group's key-value bucket. It never holds
// credentials.
type Member struct {
	Name     string `json:"name"`
	Group    string `json:"group"`
	SysID    uint64 `json:"sysid,string"`
	Timeline uint32 `json:"timeline"`
	DBOID    uint32 `json:"dboid"`
	DBName   string `json:"dbname"`
	Status   string `json:"status"`
	// DSN is the node's connection string with any password removed.
	DSN string `json:"dsn,omitempty"`
	// SeqID is the node's number in the group (0-1023), unique among
	// members, used by pgactive_snowflake_id_nextval.
	SeqID int `json:"seq_id"`
}

// seqID keeps name's number if it has one, else picks the smallest unused.
func seqID(members []Member, name string) int {
	used := map[int]bool{}
	for _, m := range members {
		if m.Name == name {
			return m.SeqID
		}
		used[m.SeqID] = true
	}
	for i := 0; ; i++ {
		if !used[i] {
			return i
		}
	}
}

// checkNotMember refuses node (database id) when the database is already
// another member of the group, not detached.
func checkNotMember(members []Member, node, group string, id Identity) error {
	for _, m := range members {
		if m.Name != node && m.SysID == id.SysID && m.DBOID == id.DBOID && m.Status != StateDetached {
			return fmt.Errorf("database %q is already member %q of group %q", id.DBName, m.Name, group)
		}
	}
	return nil
}

// PutMember writes m's record.
func PutMember(ctx context.Context, kv jetstream.KeyValue, m Member) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode member %q: %w", m.Name, err)
	}
	if _, err := kv.Put(ctx, stream.NodeKey(m.Name), b); err != nil {
		return fmt.Errorf("record member %q: %w", m.Name, err)
	}
	return nil
}

// Members lists the group's member records.
func Members(ctx context.Context, kv jetstream.KeyValue) ([]Member, error) {
	lister, err := kv.ListKeysFiltered(ctx, "nodes.>")
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	var out []Member
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read member %s: %w", key, err)
		}
		m, err := decodeMember(e.Value())
		if err != nil {
			return nil, fmt.Errorf("member %s: %w", key, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func decodeMember(b []byte) (Member, error) {
	var m Member
	if err := json.Unmarshal(b, &m); err != nil {
		return Member{}, fmt.Errorf("decode member record: %w", err)
	}
	if m.Name == "" || m.SysID == 0 {
		return Member{}, errors.New("member record without name or sysid")
	}
	return m, nil
}

// RedactDSN removes password settings from a libpq key=value string or URL.
func RedactDSN(dsn string) string {
	if strings.Contains(dsn, "://") {
		if at := strings.LastIndex(dsn, "@"); at > 0 {
			scheme := strings.Index(dsn, "://") + 3
			userinfo := dsn[scheme:at]
			if c := strings.Index(userinfo, ":"); c >= 0 {
				dsn = dsn[:scheme] + userinfo[:c] + dsn[at:]
			}
		}
		return redactQuery(dsn)
	}
	kv, err := parseKeyValues(dsn)
	if err != nil {
		return "[unparsable DSN]"
	}
	delete(kv, "password")
	return formatKeyValues(kv)
}

func redactQuery(url string) string {
	q := strings.Index(url, "?")
	if q < 0 {
		return url
	}
	params := strings.Split(url[q+1:], "&")
	kept := params[:0]
	for _, p := range params {
		if !strings.HasPrefix(strings.ToLower(p), "password=") {
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		return url[:q]
	}
	return url[:q+1] + strings.Join(kept, "&")
}
