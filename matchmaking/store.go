package matchmaking

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// Keys in the shared badger store. Everything matchmaking owns sits under
// "mm/" so other packages can share the database.
const (
	bookingPrefix = "mm/booking/"
	personPrefix  = "mm/person/"
	profileKey    = "mm/profile"
	seqKey        = "mm/seq" // ceiling of the offer seqs issued
)

// db wraps badger with the few typed operations matchmaking needs. Writes
// are synced when the DB was opened with SyncWrites (the node does that).
type db struct {
	bdb *badger.DB
	// failWrites, set by tests, makes every write fail as a full or
	// broken disk would.
	failWrites *atomic.Bool
	// beforeWrite, set by tests, is called before every write (a slow
	// disk).
	beforeWrite *atomic.Pointer[func(key string, v any)]
}

var errWriteFailed = errors.New("write failed (test)")

func (d db) put(key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if d.beforeWrite != nil {
		if f := d.beforeWrite.Load(); f != nil {
			(*f)(key, v)
		}
	}
	if d.failWrites.Load() {
		return errWriteFailed
	}
	return d.bdb.Update(func(txn *badger.Txn) error { return txn.Set([]byte(key), data) })
}

func (d db) del(key string) error {
	if d.failWrites.Load() {
		return errWriteFailed
	}
	return d.bdb.Update(func(txn *badger.Txn) error { return txn.Delete([]byte(key)) })
}

func (d db) get(key string, v any) (bool, error) {
	err := d.bdb.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte(key))
		if err != nil {
			return err
		}
		return it.Value(func(val []byte) error { return json.Unmarshal(val, v) })
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

func loadAll[T any](d db, prefix string) ([]T, error) {
	var out []T
	err := d.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix), PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var v T
			if err := it.Item().Value(func(val []byte) error { return json.Unmarshal(val, &v) }); err != nil {
				return fmt.Errorf("decoding %s: %w", it.Item().Key(), err)
			}
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

type profile struct {
	Name string `json:"name"`
}
