// Package pb holds the generated protobuf code of the /tandem/turn/1
// protocol; turn.proto is its source.
package pb

//go:generate protoc --go_out=. --go_opt=paths=source_relative turn.proto
