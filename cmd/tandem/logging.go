package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	golog "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/gologshim"
	"go.uber.org/zap/zapcore"

	"github.com/tandem-cowork/tandem/node"
)

// Logging: our logs, go-libp2p's (log/slog through gologshim) and those of
// the libraries still on go-log's zap loggers (the DHT, boxo) all leave
// through one slog handler, in one format: text or JSON lines.
//
// libp2p's own logs are kept at error unless the level is debug. At warn
// they are mostly noise to a user (a start without network prints a
// dozen "Failed to resolve addr" lines for the public bootstrap peers),
// and the node says what matters itself ("no bootstrap peer reachable").

// setupLogging builds the node's logger and routes libp2p's logs to it.
func setupLogging(level, format string, w io.Writer) (*slog.Logger, error) {
	lvl, err := node.ParseLogLevel(level)
	if err != nil {
		return nil, err
	}
	if err := node.CheckLogFormat(format); err != nil {
		return nil, err
	}
	newHandler := func(l slog.Level) slog.Handler {
		opts := &slog.HandlerOptions{Level: l}
		if format == "json" {
			return slog.NewJSONHandler(w, opts)
		}
		return slog.NewTextHandler(w, opts)
	}
	libp2pLevel := max(lvl, slog.LevelError)
	if lvl <= slog.LevelDebug {
		libp2pLevel = lvl
	}
	libp2p := newHandler(libp2pLevel)
	gologshim.SetDefaultHandler(libp2p)
	golog.SetPrimaryCore(&zapSlogCore{h: libp2p})
	golog.SetAllLoggers(golog.LogLevel(slogToZap(libp2pLevel)))
	return slog.New(newHandler(lvl)), nil
}

// zapSlogCore is a zap core that writes go-log's entries to a slog
// handler, with the subsystem as "logger" as gologshim names it.
type zapSlogCore struct {
	h      slog.Handler
	fields []zapcore.Field
}

func (c *zapSlogCore) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), zapToSlog(l))
}

func (c *zapSlogCore) With(fields []zapcore.Field) zapcore.Core {
	return &zapSlogCore{h: c.h, fields: append(c.fields[:len(c.fields):len(c.fields)], fields...)}
}

func (c *zapSlogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *zapSlogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	r := slog.NewRecord(e.Time, zapToSlog(e.Level), e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	for k, v := range enc.Fields {
		r.AddAttrs(slog.Any(k, v))
	}
	if err := c.h.Handle(context.Background(), r); err != nil {
		return fmt.Errorf("writing a go-log entry: %w", err)
	}
	return nil
}

func (c *zapSlogCore) Sync() error { return nil }

func zapToSlog(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func slogToZap(l slog.Level) zapcore.Level {
	switch {
	case l <= slog.LevelDebug:
		return zapcore.DebugLevel
	case l <= slog.LevelInfo:
		return zapcore.InfoLevel
	case l <= slog.LevelWarn:
		return zapcore.WarnLevel
	}
	return zapcore.ErrorLevel
}

// logFormatUsage is the --log-format flag's help.
var logFormatUsage = "log format: " + strings.Join(node.LogFormats, " or ")
