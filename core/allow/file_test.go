package allow

import (
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Secrets and their hashes as they appear in allowlist files.
var (
	hashAlice = HashSecret("alice-secret")
	hashBob   = HashSecret("bob-secret")
	hashCarol = HashSecret("carol-secret")
)

// lines joins its arguments into a file, one per line.
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

func funcNames(f *File) []string {
	var out []string
	for _, e := range f.Funcs {
		out = append(out, e.Decl.Name)
	}
	return out
}

func TestHashSecret(t *testing.T) {
	h := HashSecret("s3cret")
	if !strings.HasPrefix(h, HashPrefix) || len(h) != len(HashPrefix)+64 {
		t.Fatalf("HashSecret = %q, want sha256: and 64 hex digits", h)
	}
	if _, err := hex.DecodeString(strings.TrimPrefix(h, HashPrefix)); err != nil {
		t.Fatalf("HashSecret = %q: %v", h, err)
	}
	if HashSecret("s3cret") != h || HashSecret("s3cret ") == h {
		t.Fatal("HashSecret is not a function of the secret alone")
	}
}

func TestParseFileAccepts(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		check func(t *testing.T, f *File)
	}{
		{"empty file", "", func(t *testing.T, f *File) {
			if len(f.Funcs) != 0 || len(f.Users) != 0 || len(f.Roles) != 0 || f.Anonymous != nil {
				t.Errorf("empty file parsed to %+v", f)
			}
		}},
		{"comments and blank lines", lines(
			"# allowlist for the desk",
			"",
			"   # an indented comment is still a comment",
			"proc1(sym symbol)",
			"\t",
			"# sleep next",
			"sleep(ms int 0..60000) idempotent",
		), func(t *testing.T, f *File) {
			if got := funcNames(f); !reflect.DeepEqual(got, []string{"proc1", "sleep"}) {
				t.Fatalf("functions = %v", got)
			}
			if f.Funcs[0].Line != 4 || f.Funcs[1].Line != 7 {
				t.Errorf("lines = %d, %d; want 4, 7", f.Funcs[0].Line, f.Funcs[1].Line)
			}
			if !f.Funcs[1].Decl.Idempotent {
				t.Error("idempotent flag lost")
			}
		}},
		{"indented continuation lines", lines(
			"hdb(sym symbol,",
			"    start date,",
			"\tend date)",
			"  where start <= end",
			"proc1(sym symbol)",
		), func(t *testing.T, f *File) {
			if got := funcNames(f); !reflect.DeepEqual(got, []string{"hdb", "proc1"}) {
				t.Fatalf("functions = %v", got)
			}
			d := f.Funcs[0].Decl
			if len(d.Params) != 3 || d.Params[2].Name != "end" || d.Where != "start <= end" {
				t.Errorf("continued declaration = %s", d)
			}
			if f.Funcs[0].Line != 1 || f.Funcs[1].Line != 5 {
				t.Errorf("lines = %d, %d; want 1, 5", f.Funcs[0].Line, f.Funcs[1].Line)
			}
		}},
		{"comment between continuation lines", lines(
			"f(a int,",
			"# the second parameter",
			"   b int)",
		), func(t *testing.T, f *File) {
			if len(f.Funcs) != 1 || len(f.Funcs[0].Decl.Params) != 2 {
				t.Errorf("parsed %v", funcNames(f))
			}
		}},
		{"CRLF line endings and trailing spaces", "f(a int)  \r\ng(b int)\t\r\n", func(t *testing.T, f *File) {
			if got := funcNames(f); !reflect.DeepEqual(got, []string{"f", "g"}) {
				t.Errorf("functions = %v", got)
			}
		}},
		{"roles with patterns and roles", lines(
			"hdb(sym symbol)",
			"hdb2(sym symbol)",
			"rdb(sym symbol)",
			"role reader: hdb*",
			"role trader: @reader, rdb",
			"role all:\t*",
		), func(t *testing.T, f *File) {
			want := map[string]RoleEntry{
				"reader": {Grants: Grants{Patterns: []string{"hdb*"}}, Line: 4},
				"trader": {Grants: Grants{Patterns: []string{"rdb"}, Roles: []string{"reader"}}, Line: 5},
				"all":    {Grants: Grants{Patterns: []string{"*"}}, Line: 6},
			}
			if !reflect.DeepEqual(f.Roles, want) {
				t.Errorf("roles = %+v, want %+v", f.Roles, want)
			}
		}},
		{"empty role", lines("f()", "role nobody:"), func(t *testing.T, f *File) {
			if r, ok := f.Roles["nobody"]; !ok || len(r.Grants.Patterns)+len(r.Grants.Roles) != 0 {
				t.Errorf("roles = %+v", f.Roles)
			}
		}},
		{"users with hashed secrets and grants", lines(
			"hdb(sym symbol)",
			"rdb(sym symbol)",
			"role reader: hdb",
			"user alice "+hashAlice+": @reader rdb",
			"user bob "+hashBob+":\thdb, rdb",
			"user ops@desk.example-1_x "+hashCarol+":",
		), func(t *testing.T, f *File) {
			if len(f.Users) != 3 {
				t.Fatalf("users = %+v", f.Users)
			}
			a, b, c := f.Users[0], f.Users[1], f.Users[2]
			if a.Name != "alice" || a.Line != 4 || HashPrefix+hex.EncodeToString(a.Hash[:]) != hashAlice ||
				!reflect.DeepEqual(a.Grants, Grants{Patterns: []string{"rdb"}, Roles: []string{"reader"}}) {
				t.Errorf("alice = %+v", a)
			}
			if b.Name != "bob" || HashPrefix+hex.EncodeToString(b.Hash[:]) != hashBob || !reflect.DeepEqual(b.Grants.Patterns, []string{"hdb", "rdb"}) {
				t.Errorf("bob = %+v", b)
			}
			if c.Name != "ops@desk.example-1_x" || len(c.Grants.Patterns)+len(c.Grants.Roles) != 0 {
				t.Errorf("third user = %+v", c)
			}
		}},
		{"upper-case hex digits", lines("f()", "user alice "+HashPrefix+strings.ToUpper(hashAlice[len(HashPrefix):])+": f"), nil},
		{"user grants continued on the next line", lines(
			"f()", "g()",
			"user alice "+hashAlice+": f",
			"    g",
		), func(t *testing.T, f *File) {
			if !reflect.DeepEqual(f.Users[0].Grants.Patterns, []string{"f", "g"}) {
				t.Errorf("grants = %+v", f.Users[0].Grants)
			}
		}},
		{"anonymous line", lines("f()", "g()", "anonymous: f"), func(t *testing.T, f *File) {
			if f.Anonymous == nil || !reflect.DeepEqual(*f.Anonymous, Grants{Patterns: []string{"f"}}) {
				t.Errorf("anonymous = %+v", f.Anonymous)
			}
		}},
		{"empty anonymous line", lines("f()", "anonymous:"), func(t *testing.T, f *File) {
			if f.Anonymous == nil || len(f.Anonymous.Patterns)+len(f.Anonymous.Roles) != 0 {
				t.Errorf("anonymous = %+v", f.Anonymous)
			}
		}},
		{"anonymous with a space before the colon", lines("f()", "g()", "anonymous : f"), func(t *testing.T, f *File) {
			if f.Anonymous == nil || !reflect.DeepEqual(*f.Anonymous, Grants{Patterns: []string{"f"}}) {
				t.Errorf("anonymous = %+v", f.Anonymous)
			}
		}},
		{"anonymous with a role", lines("f()", "role pub: f", "anonymous: @pub"), func(t *testing.T, f *File) {
			if f.Anonymous == nil || !reflect.DeepEqual(f.Anonymous.Roles, []string{"pub"}) {
				t.Errorf("anonymous = %+v", f.Anonymous)
			}
		}},
		{"glob patterns", lines("hdb()", "hdb2()", "rdb()", ".api.get()", "role a: hdb? [hr]db *.get", "role b: *"), nil},
		{"rpc.discover may be granted without a declaration", lines("f()", "anonymous: rpc.discover"), nil},
		{"functions called role, user and anonymous", lines(
			"role(name string)",
			"user (id int)",
			"anonymous(x int)",
			"users(a int)",
			"role.get(a int)",
			"user.add(name string) where name != \"root\"",
			"role admin: role user role.get",
			"user alice "+hashAlice+": @admin user.add",
		), func(t *testing.T, f *File) {
			want := []string{"role", "user", "anonymous", "users", "role.get", "user.add"}
			if got := funcNames(f); !reflect.DeepEqual(got, want) {
				t.Errorf("functions = %v, want %v", got, want)
			}
			if f.Funcs[0].Decl.Params[0].Name != "name" || f.Funcs[1].Decl.Params[0].Name != "id" {
				t.Errorf("role(...) and user (...) parsed as %s and %s", f.Funcs[0].Decl, f.Funcs[1].Decl)
			}
			if f.Anonymous != nil {
				t.Error("anonymous(x int) taken for the anonymous directive")
			}
			if len(f.Roles) != 1 || len(f.Users) != 1 {
				t.Errorf("roles %v, users %v", f.Roles, f.Users)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseFile("test.allow", []byte(tc.src))
			if err != nil {
				t.Fatalf("ParseFile: %v", err)
			}
			if f.Name != "test.allow" {
				t.Errorf("Name = %q", f.Name)
			}
			if tc.check != nil {
				tc.check(t, f)
			}
		})
	}
}

func TestParseFileRejects(t *testing.T) {
	hex63 := strings.Repeat("a", 63)
	tests := []struct {
		name  string
		src   string
		lines []int  // acceptable line numbers (more than one only where map order decides)
		msg   string // substring of the error message
	}{
		{"duplicate function", lines("f(a int)", "# again", "f(b int)"), []int{3}, `function "f" is already declared at line 1`},
		{"duplicate function after a continuation", lines("g(a int,", "  b int)", "f()", "g()"), []int{4}, `function "g" is already declared at line 1`},
		{"duplicate user", lines("f()", "user alice "+hashAlice+": f", "user alice "+hashBob+": f"), []int{3}, `user "alice" is already defined at line 2`},
		{"duplicate role", lines("f()", "role r: f", "", "role r: f"), []int{4}, `role "r" is already defined at line 2`},
		{"duplicate anonymous", lines("f()", "anonymous: f", "anonymous: f"), []int{3}, "anonymous is already defined"},
		{"user refers to an undefined role", lines("f()", "role r: f", "user alice "+hashAlice+": @r @nope"), []int{3}, `user alice: role @nope is not defined`},
		{"role refers to an undefined role", lines("f()", "role r: f @ghost"), []int{2}, `role r: role @ghost is not defined`},
		{"anonymous refers to an undefined role", lines("f()", "g()", "anonymous: @ghost"), []int{3}, `anonymous: role @ghost is not defined`},
		{"role refers to itself", lines("f()", "role r: f @r"), []int{2}, "roles refer to each other in a cycle: r → r"},
		{"roles in a cycle", lines("f()", "role a: @b", "role b: @c f", "role c: @a"), []int{2, 3, 4}, "roles refer to each other in a cycle"},
		{"user pattern matches nothing", lines("hdb(sym symbol)", "user alice "+hashAlice+": hbd*"), []int{2}, `user alice: "hbd*" matches no declared function`},
		{"role pattern matches nothing", lines("hdb(sym symbol)", "role r: rdb"), []int{2}, `role r: "rdb" matches no declared function`},
		{"pattern is case-sensitive", lines("hdb(sym symbol)", "role r: HDB"), []int{2}, `"HDB" matches no declared function`},
		{"anonymous pattern matches nothing", lines("f()", "g()", "anonymous: h"), []int{3}, `anonymous: "h" matches no declared function`},
		{"bad pattern", lines("f()", "role r: [f"), []int{2}, `bad pattern "[f"`},
		{"bad role reference", lines("f()", "user alice "+hashAlice+": @"), []int{2}, `bad role reference "@"`},
		{"bad role reference characters", lines("f()", "role r: @a/b"), []int{2}, `bad role reference "@a/b"`},
		{"clear-text secret", lines("f()", "user alice hunter2: f"), []int{2}, `user "alice": the secret must be stored hashed, as sha256:<64 hex digits>`},
		{"clear-text secret with the prefix", lines("f()", "user alice sha256:hunter2: f"), []int{2}, "must be stored hashed"},
		{"hash one digit short", lines("f()", "user alice sha256:"+hex63+": f"), []int{2}, "must be stored hashed"},
		{"hash one digit long", lines("f()", "user alice sha256:"+hex63+"ab: f"), []int{2}, "must be stored hashed"},
		{"hash with a non-hex digit", lines("f()", "user alice sha256:"+hex63+"g: f"), []int{2}, "must be stored hashed"},
		{"hash prefix in upper case", lines("f()", "user alice SHA256:"+hex63+"a: f"), []int{2}, "must be stored hashed"},
		{"other hash algorithm", lines("f()", "user alice md5:"+strings.Repeat("0", 32)+": f"), []int{2}, "must be stored hashed"},
		{"empty hash", lines("f()", "user alice sha256:: f"), []int{2}, "must be stored hashed"},
		{"user without a secret", lines("f()", "user alice: f"), []int{2}, "want: user NAME sha256:HEX"},
		{"user without a colon", lines("f()", "user alice "+hashAlice+" f"), []int{2}, "want: user NAME sha256:HEX"},
		{"user with a secret in two words", lines("f()", "user alice my secret: f"), []int{2}, "want: user NAME sha256:HEX"},
		{"user name with a slash", lines("f()", "user al/ice "+hashAlice+": f"), []int{2}, `user name "al/ice": use letters, digits`},
		{"user name with a quote", lines("f()", `user al"ice `+hashAlice+": f"), []int{2}, "user name"},
		{"user name with a colon", lines("f()", "user al:ice "+hashAlice+": f"), []int{2}, "user name"},
		{"user name with a star", lines("f()", "user *"+" "+hashAlice+": f"), []int{2}, "user name"},
		{"user name with a non-ASCII letter", lines("f()", "user ålice "+hashAlice+": f"), []int{2}, "user name"},
		{"role name with a space", lines("f()", "role ad min: f"), []int{2}, "want: role NAME:"},
		{"role without a name", lines("f()", "role : f"), []int{2}, "want: role NAME:"},
		{"role without a colon", lines("f()", "role admin f"), []int{2}, "want: role NAME:"},
		{"bad declaration", lines("f()", "# next", "g(a integer)"), []int{3}, `column 5: unknown type "integer"`},
		{"unterminated declaration", lines("f(a int"), []int{1}, "column 8: expected ')'"},
		{"continued declaration with an error", lines("f(a int,", "  b nope)", "g()"), []int{1}, `column 12: unknown type "nope"`},
		{"reserved rpc. name", lines("rpc.discover()"), []int{1}, "column 1: function name \"rpc.discover\": the rpc. prefix is reserved"},
		{"unknown directive", lines("f()", "grant alice: f"), []int{2}, "column"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseFile("desk.allow", []byte(tc.src))
			if err == nil {
				t.Fatalf("ParseFile accepted it: %+v", f)
			}
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("error %v (%T) is not a *LineError", err, err)
			}
			ok := false
			for _, l := range tc.lines {
				ok = ok || le.Line == l
			}
			if !ok {
				t.Errorf("error %q at line %d, want line %v", err, le.Line, tc.lines)
			}
			if le.File != "desk.allow" || !strings.HasPrefix(err.Error(), "desk.allow:") {
				t.Errorf("error %q does not name the file", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q, want it to contain %q", err, tc.msg)
			}
			if le.Unwrap() == nil {
				t.Error("LineError wraps nothing")
			}
		})
	}
}

// TestParseFileNeverStoresClearSecrets: whatever a user line holds in the
// secret's place, an accepted file holds it as the SHA-256 written there.
func TestParseFileNeverStoresClearSecrets(t *testing.T) {
	for _, secret := range []string{"hunter2", "sha256:", "sha256:" + strings.Repeat("z", 64), strings.Repeat("ab", 32), "SHA256:" + strings.Repeat("ab", 32)} {
		f, err := ParseFile("x", []byte(lines("f()", "user alice "+secret+": f")))
		if err == nil {
			t.Errorf("secret %q accepted: %+v", secret, f.Users)
		}
	}
}

// TestParseFileLongLine: a line longer than the scanner's buffer must not
// silently end the file. Were the lines after it dropped, the users below
// would vanish and a file with no users lets every caller call everything.
func TestParseFileLongLine(t *testing.T) {
	src := lines(
		"secret(a int)",
		"# "+strings.Repeat("x", 2<<20),
		"user alice "+hashAlice+": secret",
	)
	f, err := ParseFile("big.allow", []byte(src))
	if err != nil {
		var le *LineError
		if !errors.As(err, &le) || le.Line != 2 {
			t.Errorf("error %v, want a *LineError at line 2", err)
		}
		return
	}
	if len(f.Users) != 1 {
		t.Fatalf("ParseFile silently dropped everything after the long line 2: users = %+v, anonymous = %v", f.Users, f.Anonymous)
	}
}
