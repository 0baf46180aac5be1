//go:build race

package matchmaking

// The race detector makes everything several times slower.
const raceSlowdown = 4
