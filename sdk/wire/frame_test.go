package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// frame encodes body with a 4-byte big-endian length.
func encFrame(body string) string {
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], uint32(len(body)))
	return string(h[:]) + body
}

// header returns a bare 4-byte length prefix.
func rawHeader(n uint32) string {
	var h [4]byte
	binary.BigEndian.PutUint32(h[:], n)
	return string(h[:])
}

// readAll reads frames until an error and returns them with that error.
func readAll(r *Reader) ([]string, error) {
	var out []string
	for {
		b, err := r.ReadFrame(nil)
		if err != nil {
			return out, err
		}
		out = append(out, string(b))
	}
}

func TestReadFrame(t *testing.T) {
	tooLarge := func(size uint32, limit int) error { return &FrameTooLargeError{Size: size, Limit: limit} }
	tests := []struct {
		name    string
		stream  string
		limit   int
		want    []string
		wantErr error // compared with errors.Is, or field by field for *FrameTooLargeError
	}{
		{"one frame then clean EOF", encFrame(`{"jsonrpc":"2.0"}`), 0, []string{`{"jsonrpc":"2.0"}`}, io.EOF},
		{"two frames", encFrame("a") + encFrame("bc"), 0, []string{"a", "bc"}, io.EOF},
		{"zero-length frame", encFrame(""), 0, []string{""}, io.EOF},
		{"zero-length frames between others", encFrame("") + encFrame("x") + encFrame(""), 0, []string{"", "x", ""}, io.EOF},
		{"empty stream is a clean EOF", "", 0, nil, io.EOF},
		{"frame exactly at the limit", encFrame("12345678"), 8, []string{"12345678"}, io.EOF},
		{"frame one over the limit", encFrame("123456789"), 8, nil, tooLarge(9, 8)},
		{"frame over the limit after good ones", encFrame("ok") + encFrame("123456789"), 8, []string{"ok"}, tooLarge(9, 8)},
		{"largest header against the default limit", rawHeader(0xFFFFFFFF), 0, nil, tooLarge(0xFFFFFFFF, DefaultMaxFrame)},
		{"default limit plus one", rawHeader(DefaultMaxFrame + 1), -1, nil, tooLarge(DefaultMaxFrame+1, DefaultMaxFrame)},
		{"truncated header: 1 byte", "\x00", 0, nil, ErrTruncated},
		{"truncated header: 3 bytes", "\x00\x00\x00", 0, nil, ErrTruncated},
		{"truncated body", rawHeader(10) + "abc", 0, nil, ErrTruncated},
		{"header with no body", rawHeader(1), 0, nil, ErrTruncated},
		{"good frame then truncated header", encFrame("ok") + "\x00\x00", 0, []string{"ok"}, ErrTruncated},
		{"good frame then truncated body", encFrame("ok") + rawHeader(5) + "1234", 0, []string{"ok"}, ErrTruncated},
		{"HTTP POST", "POST / HTTP/1.1\r\nHost: x\r\n\r\n", 0, nil, ErrNotFramed},
		{"HTTP GET", "GET / HTTP/1.1\r\n\r\n", 0, nil, ErrNotFramed},
		{"HTTP PUT", "PUT /x HTTP/1.1\r\n\r\n", 0, nil, ErrNotFramed},
		{"HTTP HEAD", "HEAD / HTTP/1.1\r\n\r\n", 0, nil, ErrNotFramed},
		{"bare JSON object", `{"jsonrpc":"2.0","id":1,"method":"f"}`, 0, nil, ErrNotFramed},
		{"bare JSON batch", `[{"jsonrpc":"2.0","id":1,"method":"f"}]`, 0, nil, ErrNotFramed},
		{"bare JSON shorter than a header", `{}`, 0, nil, ErrTruncated},
		{"POST as the second frame is just too large", encFrame("x") + "POST", 0, []string{"x"}, tooLarge(0x504F5354, DefaultMaxFrame)},
		{"brace as the second frame is just too large", encFrame("x") + "{\"a\":1}", 0, []string{"x"}, tooLarge(0x7B226122, DefaultMaxFrame)},
		{"capitals with a digit are a length", "ABC1", 0, nil, tooLarge(0x41424331, DefaultMaxFrame)},
		{"lower-case post is a length", "post", 0, nil, tooLarge(0x706F7374, DefaultMaxFrame)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tc.stream), tc.limit)
			got, err := readAll(r)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
				t.Errorf("frames = %q, want %q", got, tc.want)
			}
			var wantTL *FrameTooLargeError
			if errors.As(tc.wantErr, &wantTL) {
				var gotTL *FrameTooLargeError
				if !errors.As(err, &gotTL) {
					t.Fatalf("error = %v, want %v", err, tc.wantErr)
				}
				if *gotTL != *wantTL {
					t.Errorf("error = %+v, want %+v", *gotTL, *wantTL)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestReaderLimit(t *testing.T) {
	tests := []struct {
		name  string
		limit int
		want  int
	}{
		{"zero means default", 0, DefaultMaxFrame},
		{"negative means default", -5, DefaultMaxFrame},
		{"explicit", 100, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NewReader(strings.NewReader(""), tc.limit).Limit(); got != tc.want {
				t.Errorf("Limit() = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestFrameTooLargeErrorMessage(t *testing.T) {
	e := &FrameTooLargeError{Size: 9, Limit: 8}
	if got, want := e.Error(), "frame of 9 bytes exceeds the limit of 8 bytes"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestReadFrameReusesDst(t *testing.T) {
	r := NewReader(strings.NewReader(encFrame("hello")+encFrame("hi")+encFrame("a longer frame body")), 0)
	dst := make([]byte, 3, 16)
	copy(dst, "xyz")
	got, err := r.ReadFrame(dst)
	if err != nil || string(got) != "hello" {
		t.Fatalf("ReadFrame = %q, %v", got, err)
	}
	if &got[0] != &dst[:1][0] {
		t.Error("a dst with enough capacity was not reused")
	}
	got2, err := r.ReadFrame(got)
	if err != nil || string(got2) != "hi" {
		t.Fatalf("second ReadFrame = %q, %v (must append to dst[:0], not dst)", got2, err)
	}
	got3, err := r.ReadFrame(got2)
	if err != nil || string(got3) != "a longer frame body" {
		t.Fatalf("third ReadFrame = %q, %v", got3, err)
	}
	if _, err := r.ReadFrame(got3); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestReadFrameOneByteAtATime(t *testing.T) {
	stream := encFrame("first") + encFrame("") + encFrame(strings.Repeat("z", 1000))
	r := NewReader(iotest.OneByteReader(strings.NewReader(stream)), 0)
	got, err := readAll(r)
	if err != io.EOF || len(got) != 3 || got[0] != "first" || got[1] != "" || got[2] != strings.Repeat("z", 1000) {
		t.Fatalf("frames = %q, err %v", got, err)
	}
}

func TestReadFramePassesOtherErrorsThrough(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name   string
		prefix string
	}{
		{"error before any byte", ""},
		{"error inside the header", "\x00\x00"},
		{"error inside the body", rawHeader(10) + "abc"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(io.MultiReader(strings.NewReader(tc.prefix), iotest.ErrReader(boom)), 0)
			if _, err := r.ReadFrame(nil); !errors.Is(err, boom) {
				t.Errorf("error = %v, want the reader's own error", err)
			}
		})
	}
}

func TestReaderBuffered(t *testing.T) {
	second := encFrame("second")
	r := NewReader(strings.NewReader(encFrame("first")+second), 0)
	if n := r.Buffered(); n != 0 {
		t.Errorf("Buffered before reading = %d, want 0", n)
	}
	if _, err := r.ReadFrame(nil); err != nil {
		t.Fatal(err)
	}
	if n := r.Buffered(); n != len(second) {
		t.Errorf("Buffered after the first frame = %d, want %d", n, len(second))
	}
	if _, err := r.ReadFrame(nil); err != nil {
		t.Fatal(err)
	}
	if n := r.Buffered(); n != 0 {
		t.Errorf("Buffered at the end = %d, want 0", n)
	}
}

func TestBeginEndFrame(t *testing.T) {
	tests := []struct {
		name    string
		prefix  string
		body    string
		limit   int
		wantErr *FrameTooLargeError
	}{
		{"small body", "", `{"a":1}`, 0, nil},
		{"after existing frames", encFrame("earlier"), "body", 0, nil},
		{"empty body", "xx", "", 10, nil},
		{"exactly the limit", "", "12345678", 8, nil},
		{"one over the limit", "keep", "123456789", 8, &FrameTooLargeError{Size: 9, Limit: 8}},
		{"over the default limit", "keep", strings.Repeat("x", DefaultMaxFrame+1), 0, &FrameTooLargeError{Size: DefaultMaxFrame + 1, Limit: DefaultMaxFrame}},
		{"negative limit means default", "", strings.Repeat("x", 100), -1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte(tc.prefix)
			dst, start := BeginFrame(dst)
			if start != len(tc.prefix) || len(dst) != len(tc.prefix)+HeaderSize {
				t.Fatalf("BeginFrame: start %d len %d", start, len(dst))
			}
			dst = append(dst, tc.body...)
			out, err := EndFrame(dst, start, tc.limit)
			if tc.wantErr != nil {
				var tl *FrameTooLargeError
				if !errors.As(err, &tl) || *tl != *tc.wantErr {
					t.Fatalf("EndFrame error = %v, want %v", err, tc.wantErr)
				}
				if string(out) != tc.prefix {
					t.Errorf("dst after a refused frame = %q, want it truncated back to %q", out, tc.prefix)
				}
				return
			}
			if err != nil {
				t.Fatalf("EndFrame: %v", err)
			}
			if want := tc.prefix + encFrame(tc.body); string(out) != want {
				t.Errorf("EndFrame = %q, want %q", out, want)
			}
			if string(AppendFrame([]byte(tc.prefix), []byte(tc.body))) != string(out) {
				t.Errorf("AppendFrame disagrees with BeginFrame/EndFrame")
			}
		})
	}
}

func TestAppendFrameReadsBack(t *testing.T) {
	bodies := []string{"", "a", `{"jsonrpc":"2.0","id":1,"result":null}`, strings.Repeat("é", 3000)}
	var stream []byte
	for _, b := range bodies {
		stream = AppendFrame(stream, []byte(b))
	}
	got, err := readAll(NewReader(bytes.NewReader(stream), 0))
	if err != io.EOF {
		t.Fatalf("error %v, want io.EOF", err)
	}
	if strings.Join(got, "|") != strings.Join(bodies, "|") || len(got) != len(bodies) {
		t.Errorf("frames = %q, want %q", got, bodies)
	}
}

func TestReaderHasFrame(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   bool // after reading the first frame
	}{
		{"next frame complete", encFrame("a") + encFrame("bc"), true},
		{"next frame is zero-length", encFrame("a") + encFrame(""), true},
		{"nothing after", encFrame("a"), false},
		{"partial header after", encFrame("a") + "\x00\x00", false},
		{"header but partial body after", encFrame("a") + rawHeader(10) + "abc", false},
		{"header only after", encFrame("a") + rawHeader(1), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tc.stream), 0)
			if r.HasFrame() {
				t.Error("HasFrame before anything was read from the stream")
			}
			if _, err := r.ReadFrame(nil); err != nil {
				t.Fatal(err)
			}
			if got := r.HasFrame(); got != tc.want {
				t.Errorf("HasFrame = %v, want %v", got, tc.want)
			}
			if tc.want {
				if _, err := r.ReadFrame(nil); err != nil {
					t.Errorf("HasFrame was true but ReadFrame failed: %v", err)
				}
			}
		})
	}
}
