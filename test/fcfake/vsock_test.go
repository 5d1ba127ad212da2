package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/agent"
)

// putVsock configures the vsock device and returns its UDS path.
func (p *fc) putVsock() string {
	p.t.Helper()
	uds := filepath.Join(p.dir, "v.sock")
	p.ok("PUT", "/vsock", fmt.Sprintf(`{"guest_cid":3,"uds_path":%q}`, uds))
	return uds
}

func agentClient(uds string) *agent.Client {
	return agent.NewClient(func(ctx context.Context) (net.Conn, error) {
		c, _, err := vsockDial(ctx, uds, agent.DefaultPort)
		return c, err
	})
}

func TestVsockAgent(t *testing.T) {
	p := startFC(t, fcOpts{env: []string{"FCFAKE_SSH_LOGINS=2"}})
	uds := p.putVsock()
	if fi, err := os.Stat(uds); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("vsock UDS not bound at PUT time: %v %v", fi, err)
	}
	// Before boot no guest listens: closed without a reply.
	if out, err := rawVsock(t, uds, "CONNECT 1024\n"); out != "" || err != nil {
		t.Errorf("before boot: got %q, %v; want the connection closed with no reply", out, err)
	}
	p.boot(ptr("console=ttyS0 reboot=k ip=172.16.0.2::172.16.0.1:255.255.255.0:devbox:eth0:off:1.1.1.1"))

	ctx := context.Background()
	c1, port1, err := vsockDial(ctx, uds, agent.DefaultPort)
	if err != nil {
		t.Fatal(err)
	}
	c1.Close()
	c2, port2, err := vsockDial(ctx, uds, agent.DefaultPort)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if port1 != "1073741824" || port2 != "1073741825" {
		t.Errorf("host ports %s, %s; want 1073741824, 1073741825", port1, port2)
	}

	cl := agentClient(uds)
	h, rtt, err := cl.Health(ctx)
	if err != nil {
		t.Fatalf("Health over the fake's vsock: %v", err)
	}
	if h.Status != "ok" || h.Hostname != "devbox" || h.BootID == "" || h.UptimeS <= 0 || h.UptimeS > 30 || rtt <= 0 {
		t.Errorf("Health = %+v rtt %v", h, rtt)
	}
	info, err := cl.Info(ctx)
	if err != nil {
		t.Fatalf("Info over the fake's vsock: %v", err)
	}
	if info.SSHLogins != 2 || info.MemTotalBytes == 0 || info.Kernel == "" {
		t.Errorf("Info = %+v", info)
	}

	// The handshake's keyword is case-insensitive and extra words are ignored.
	if out, _ := rawVsock(t, uds, "connect 1024 extra\nGET /healthz HTTP/1.0\r\n\r\n"); !strings.HasPrefix(out, "OK 1073741") || !strings.Contains(out, `"hostname":"devbox"`) {
		t.Errorf("lower-case connect: %q", out)
	}
	for _, req := range []string{
		"CONNECT 22\n",         // nobody listens on that port in the guest
		"HELLO 1024\n",         // not CONNECT
		"CONNECT\n",            // no port
		"CONNECT -1\n",         // not a u32
		"CONNECT 4294967296\n", // too big for a u32
		"CONNECT 1024" + strings.Repeat(" ", 40) + "\n", // longer than the muxer reads
	} {
		if out, err := rawVsock(t, uds, req); out != "" || err != nil {
			t.Errorf("%q: got %q, %v; want the connection closed with no reply", req, out, err)
		}
	}

	// Paused: the guest accepts nothing until resumed.
	p.ok("PATCH", "/vm", `{"state":"Paused"}`)
	ctxShort, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, _, err = vsockDial(ctxShort, uds, agent.DefaultPort)
	cancel()
	if err == nil {
		t.Error("a paused guest answered CONNECT")
	}
	p.ok("PATCH", "/vm", `{"state":"Resumed"}`)
	if _, _, err := cl.Health(ctx); err != nil {
		t.Errorf("Health after resume: %v", err)
	}

	// The UDS outlives the process.
	p.ok("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
	if st, ok := p.wait(3 * time.Second); !ok || st.ExitCode() != 0 {
		t.Fatalf("%v %v", st, ok)
	}
	if _, err := os.Stat(uds); err != nil {
		t.Errorf("vsock UDS removed at exit: %v", err)
	}
}

func TestVsockBind(t *testing.T) {
	p := startFC(t, fcOpts{})
	taken := filepath.Join(p.dir, "taken.sock")
	os.WriteFile(taken, nil, 0o600)
	p.fault("PUT", "/vsock", fmt.Sprintf(`{"guest_cid":3,"uds_path":%q}`, taken), "Address already in use (os error 98)")

	first := p.putVsock()
	second := filepath.Join(p.dir, "v2.sock")
	p.ok("PUT", "/vsock", fmt.Sprintf(`{"guest_cid":4,"uds_path":%q,"vsock_id":"vsock0"}`, second))
	if _, err := os.Stat(first); !os.IsNotExist(err) {
		t.Errorf("a second PUT /vsock left the old socket file: %v", err)
	}
	if _, err := os.Stat(second); err != nil {
		t.Errorf("new socket missing: %v", err)
	}
}

func TestVsockSwitches(t *testing.T) {
	t.Run("FCFAKE_AGENT_DOWN", func(t *testing.T) {
		p := startFC(t, fcOpts{env: []string{"FCFAKE_AGENT_DOWN=1"}})
		uds := p.putVsock()
		p.boot(nil)
		if out, err := rawVsock(t, uds, "CONNECT 1024\n"); out != "" || err != nil {
			t.Errorf("got %q, %v; want closed with no OK", out, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, _, err := agentClient(uds).Health(ctx); err == nil || !strings.Contains(err.Error(), "no OK") {
			t.Errorf("Health error = %v, want the handshake failure", err)
		}
	})
	t.Run("FCFAKE_BOOT_DELAY", func(t *testing.T) {
		p := startFC(t, fcOpts{env: []string{"FCFAKE_BOOT_DELAY=700ms"}})
		uds := p.putVsock()
		p.boot(nil)
		booted := time.Now()
		if out, _ := rawVsock(t, uds, "CONNECT 1024\n"); out != "" {
			t.Errorf("agent answered %q right after boot", out)
		}
		var err error
		for time.Since(booted) < 3*time.Second {
			if _, _, err = agentClient(uds).Health(context.Background()); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("agent never answered: %v", err)
		}
		if took := time.Since(booted); took < 600*time.Millisecond {
			t.Errorf("agent answered %v after boot, want about 700ms", took)
		}
	})
}
