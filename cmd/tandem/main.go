// Command tandem is the Tandem CLI: `tandem up` runs the node; every other
// command is a client of the running node's local API.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/tandem-cowork/tandem/node/client"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		var apiErr *client.APIError
		switch {
		case errors.As(err, &apiErr):
			fmt.Fprintln(os.Stderr, "tandem:", esc(apiErr.Message))
		default:
			fmt.Fprintln(os.Stderr, "tandem:", esc(err.Error()))
		}
		os.Exit(1)
	}
}
