package cli

import (
	"bytes"
	"flag"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.golden")

func testApp(env map[string]string) (*app, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &app{build: BuildInfo{Version: "test"}, stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}, &out, &errb
}
