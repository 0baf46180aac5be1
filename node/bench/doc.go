// Package bench measures Tandem at scale on one machine: RunSwarm starts a
// swarm of real nodes in this process (libp2p hosts on 127.0.0.1, gossipsub
// with the daemon's options, badger stores with synced writes, the
// matchmaking service with its default timers), drives a seeded booking
// workload through them and reports offer propagation, time to match
// against the floor of the stack underneath, matched pairs against the
// exact maximum, invariant violations, traffic, memory and CPU.
// RunSession opens concurrent co-working sessions between pairs of nodes
// with synthetic browser legs and reports setup times and relay CPU.
//
// `tandem bench swarm` and `tandem bench session` print the results;
// docs/benchmarks.md explains every number. Nothing leaves the machine:
// loopback only, no mDNS, no DHT, no STUN.
package bench
