package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The API token is what the CLI (through the API file) and the web UI
// (through the login cookie) prove they are the user with. It lives in the
// data dir (TokenFile, mode 0600) and survives restarts, so restarting the
// node does not log every open tab out. RotateToken, `tandem token rotate`
// and POST /api/v1/token/rotate replace it, which logs every browser out.

// tokenBytes is the token's length before hex encoding (256 bits).
const tokenBytes = 32

func newToken() string {
	b := make([]byte, tokenBytes)
	rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// validToken reports whether s looks like a token this package wrote: a
// hand-edited or truncated file must not become a guessable token.
func validToken(s string) bool {
	if len(s) != 2*tokenBytes {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// loadOrCreateToken reads the token file in dataDir, or writes a new one
// when there is none. A file that holds no valid token is replaced.
func loadOrCreateToken(dataDir string) (tok string, created bool, err error) {
	return loadOrCreateSecret(dataDir, TokenFile)
}

// loadOrCreateSecret is loadOrCreateToken for any token file of the data
// dir (the API token, the calendar feed's).
func loadOrCreateSecret(dataDir, file string) (tok string, created bool, err error) {
	path := filepath.Join(dataDir, file)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if t := strings.TrimSpace(string(data)); validToken(t) {
			// Tighten a copy made with a loose umask (e.g. restored from a backup).
			if fi, serr := os.Stat(path); serr == nil && fi.Mode().Perm()&0o077 != 0 {
				if err := os.Chmod(path, 0o600); err != nil {
					return "", false, fmt.Errorf("securing token file: %w", err)
				}
			}
			return t, false, nil
		}
	case !errors.Is(err, os.ErrNotExist):
		return "", false, fmt.Errorf("reading token file: %w", err)
	}
	tok, err = writeSecret(dataDir, file)
	return tok, true, err
}

// writeToken writes a new token into dataDir and returns it.
func writeToken(dataDir string) (string, error) { return writeSecret(dataDir, TokenFile) }

// writeSecret writes a new token into dataDir's file and returns it.
func writeSecret(dataDir, file string) (string, error) {
	tok := newToken()
	if err := writeFileAtomic(filepath.Join(dataDir, file), []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("saving %s: %w", file, err)
	}
	return tok, nil
}

// RotateToken replaces the token of the node whose data dir is dataDir
// while that node is not running (a running node rotates through its API:
// POST /api/v1/token/rotate). Every browser logged in to it is logged out;
// the new login URL is printed by `tandem status` and `tandem open`.
func RotateToken(dataDir string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("creating data dir: %w", err)
	}
	return writeToken(dataDir)
}

// currentToken is the token the API accepts now.
func (n *Node) currentToken() string {
	tok, _ := n.tokenNow()
	return tok
}

// tokenNow is the token the API accepts now, and a channel closed when it
// is rotated.
func (n *Node) tokenNow() (string, <-chan struct{}) {
	n.tokenMu.RLock()
	defer n.tokenMu.RUnlock()
	return n.token, n.rotated
}

// rotateToken switches the running node to a new token: the token file and
// the API file get it, and every cookie and client holding the old one
// stops working.
func (n *Node) rotateToken() (string, error) {
	n.tokenMu.Lock()
	defer n.tokenMu.Unlock()
	tok := newToken()
	if n.cfg.DataDir != "" {
		var err error
		if tok, err = writeToken(n.cfg.DataDir); err != nil {
			return "", err
		}
	}
	n.token = tok
	// Event streams opened with the old token end: a browser logged out
	// by the rotation must not keep receiving the user's events.
	close(n.rotated)
	n.rotated = make(chan struct{})
	if err := n.writeAPIFileLocked(); err != nil {
		return "", err
	}
	n.log.Info("API token rotated: every browser must log in again")
	return tok, nil
}
