// Package pb holds the generated protobuf code of the matchmaking wire
// protocol; matchmaking.proto is its source.
package pb

//go:generate protoc --go_out=. --go_opt=paths=source_relative matchmaking.proto
