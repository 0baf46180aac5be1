// Package pb holds the generated protobuf code of the session wire
// protocols; session.proto is its source.
package pb

//go:generate protoc --go_out=. --go_opt=paths=source_relative session.proto
