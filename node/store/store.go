// Package store opens the node's embedded badger database with options
// sized for a desktop daemon, and keeps its value log tidy.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// ErrLocked is returned when another process (usually a second `tandem up`)
// already has the data dir open.
var ErrLocked = errors.New("the data dir is in use by another running tandem node")

// Open opens (or creates) the store in dir, or an in-memory one when
// inMemory is set. Writes are synced: a booking acknowledged to a partner
// must survive a crash.
func Open(dir string, inMemory bool, log *slog.Logger) (*badger.DB, error) {
	opts := badger.DefaultOptions(dir)
	if inMemory {
		opts = badger.DefaultOptions("").WithInMemory(true)
	}
	// Badger's defaults are for servers (64 MiB memtables x5, 256 MiB block
	// cache); a node holds a few thousand small records.
	opts = opts.
		WithSyncWrites(!inMemory).
		WithMemTableSize(4 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithBlockCacheSize(4 << 20).
		WithIndexCacheSize(2 << 20).
		WithValueLogFileSize(16 << 20).
		WithValueThreshold(64 << 10).
		WithNumCompactors(2).
		WithLogger(nil)
	db, err := badger.Open(opts)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("opening store in %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("opening store in %s: %w", dir, err)
	}
	return db, nil
}

// RunGC collects the value log every interval until ctx ends.
func RunGC(ctx context.Context, db *badger.DB, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for db.RunValueLogGC(0.5) == nil {
			}
		}
	}
}
