//go:build !race

package matchmaking

const raceSlowdown = 1
