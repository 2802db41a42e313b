package main

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// findChromium returns a headless-capable Chromium, or "".
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// chromiumArgs are the flags a headless Chromium needs on a closed,
// root-run CI machine.
func chromiumArgs(profile string, extra ...string) []string {
	return append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir=" + profile,
		"--virtual-time-budget=4000"}, extra...)
}

// TestE2EStatusPageInBrowser loads the status page in a real headless
// Chromium: the page's script must fetch /status and show every servant,
// and its screenshot must be a real rendering.
func TestE2EStatusPageInBrowser(t *testing.T) {
	chromium := findChromium()
	if chromium == "" {
		t.Skip("chromium is not installed (Debian package chromium; .ci/run installs it): the status page is not checked in a browser")
	}
	m := startMserve(t, mserveOpts{flags: []string{"-algo", "least"}, servants: []string{"2", quickstartBin}})
	m.waitServing("s1", "s2")
	url := "http://" + m.admin + "/"
	dir := t.TempDir()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dom, err := exec.CommandContext(ctx, chromium, chromiumArgs(filepath.Join(dir, "p1"), "--dump-dom", url)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	for _, want := range []string{"<td>s1</td>", "<td>s2</td>", `class="up"`, "algorithm least"} {
		if !bytes.Contains(dom, []byte(want)) {
			t.Errorf("rendered page lacks %q: the page did not fill itself from /status\n%s", want, clipDOM(dom))
		}
	}

	shot := filepath.Join(dir, "status.png")
	cmd := exec.CommandContext(ctx, chromium, chromiumArgs(filepath.Join(dir, "p2"), "--screenshot="+shot, "--window-size=1200,800", url)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 800 {
		t.Errorf("screenshot is %v, want 1200x800", b)
	}
	colors := map[[3]uint32]bool{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y += 4 {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x += 4 {
			r, g, b, _ := img.At(x, y).RGBA()
			colors[[3]uint32{r >> 8, g >> 8, b >> 8}] = true
		}
	}
	if len(colors) < 8 {
		t.Errorf("screenshot has %d colours: blank or not rendered", len(colors))
	}
	if keep := os.Getenv("MSERVE_KEEP_SCREENSHOT"); keep != "" {
		data, _ := os.ReadFile(shot)
		os.WriteFile(keep, data, 0o644)
	}
}

func clipDOM(b []byte) string {
	s := string(b)
	if i := strings.Index(s, "<body"); i >= 0 {
		s = s[i:]
	}
	if len(s) > 2000 {
		s = s[:2000] + "…"
	}
	return s
}
