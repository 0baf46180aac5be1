package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tandem-cowork/tandem/node"
)

// IdleNode returns a SwarmConfig.IdleNode that runs `exe up` as a user
// would, but local only: its own temp data dir and an empty config,
// listening on 127.0.0.1 (TCP and QUIC), API on a free loopback port, no
// bootstrap peers, no mDNS (so no UPnP and no STUN either). It is ready
// when its API file appears.
func IdleNode(exe string) func(ctx context.Context) (int, func() error, error) {
	return func(ctx context.Context) (int, func() error, error) {
		dir, err := os.MkdirTemp("", "tandem-idle-")
		if err != nil {
			return 0, nil, err
		}
		// An empty config file: the user's own must not change what is
		// measured, and a --config that does not exist is an error.
		conf := filepath.Join(dir, "empty.toml")
		if err := os.WriteFile(conf, nil, 0o600); err != nil {
			os.RemoveAll(dir)
			return 0, nil, err
		}
		var stderr bytes.Buffer
		cmd := exec.Command(exe, "up",
			"--data-dir", dir, "--config", conf,
			"--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1",
			"--api", "127.0.0.1:0", "--bootstrap", "none", "--no-mdns", "--log-level", "error")
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return 0, nil, fmt.Errorf("starting %s up: %w", exe, err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		stop := func() error {
			defer os.RemoveAll(dir)
			cmd.Process.Signal(syscall.SIGTERM)
			t := time.NewTimer(10 * time.Second)
			defer t.Stop()
			select {
			case err := <-exited:
				return err
			case <-t.C:
				cmd.Process.Kill()
				return <-exited
			}
		}
		err = pollUntil(ctx, 20*time.Second, func() bool {
			_, err := os.Stat(filepath.Join(dir, node.APIFile))
			return err == nil
		})
		if err != nil {
			stop()
			return 0, nil, fmt.Errorf("waiting for the idle node's API: %w (its output: %q)", err, stderr.String())
		}
		return cmd.Process.Pid, stop, nil
	}
}
