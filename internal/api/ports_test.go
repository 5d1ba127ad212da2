package api

import (
	"strings"
	"testing"
)

func TestParsePublish(t *testing.T) {
	good := map[string]PublishSpec{
		"8080:80":                {"", 8080, 80},
		"127.0.0.1:8080:80":      {"127.0.0.1", 8080, 80},
		"0.0.0.0:1:65535":        {"0.0.0.0", 1, 65535},
		"[::1]:8080:80":          {"::1", 8080, 80},
		"[::ffff:127.0.0.2]:9:9": {"127.0.0.2", 9, 9},
	}
	for in, want := range good {
		got, err := ParsePublish(in)
		if err != nil || got != want {
			t.Errorf("ParsePublish(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"80":                "need a host and a guest port",
		"8080:":             "guest port",
		"8080:0":            "guest port \"0\" is not a port",
		"x:80":              "host port \"x\"",
		"70000:80":          "host port",
		"localhost:8080:80": `"localhost" is not an IP address`,
		"::1:8080:80":       "is not an IP address",
		"":                  "need a host",
	}
	for in, want := range bad {
		_, err := ParsePublish(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "[ADDR:]HOST:GUEST") {
			t.Errorf("ParsePublish(%q) = %v; want an error containing %q", in, err, want)
		}
	}
}

func TestParseUnpublish(t *testing.T) {
	if a, p, err := ParseUnpublish("8080"); err != nil || a != "" || p != 8080 {
		t.Errorf("8080 = %q %d %v", a, p, err)
	}
	if a, p, err := ParseUnpublish("[::1]:8080"); err != nil || a != "::1" || p != 8080 {
		t.Errorf("[::1]:8080 = %q %d %v", a, p, err)
	}
	if _, _, err := ParseUnpublish("8080:80"); err == nil || !strings.Contains(err.Error(), "--unpublish") {
		t.Errorf("8080:80 = %v; want a refusal", err)
	}
}

func TestForwardHost(t *testing.T) {
	if got := (Forward{HostAddr: "127.0.0.1", HostPort: 8080}).Host(); got != "127.0.0.1:8080" {
		t.Error(got)
	}
	if got := (Forward{HostAddr: "::1", Requested: 80}).Host(); got != "[::1]:80" {
		t.Error(got)
	}
}
