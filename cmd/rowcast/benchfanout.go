package main

import (
	"context"
	"io"
)

func runBenchFanout(ctx context.Context, args []string, stdout, stderr io.Writer) int { return exitUsage }
