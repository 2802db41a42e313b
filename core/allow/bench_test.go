package allow

import "testing"

func benchCheck(b *testing.B, src string) {
	f := compileFunc(b, src)
	params := []byte(`["IBM","2026-01-02","2026-01-20"]`)
	if _, err := f.Check(params); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Check(params); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheck validates a typical 3-argument call with a condition.
func BenchmarkCheck(b *testing.B) {
	benchCheck(b, `hdb(sym symbol, start date, end date) where start <= end && end - start <= duration("720h")`)
}

// BenchmarkCheckNoCondition is the same call without the condition.
func BenchmarkCheckNoCondition(b *testing.B) {
	benchCheck(b, `hdb(sym symbol, start date, end date)`)
}

// BenchmarkCheckDefault fills in a left-out argument.
func BenchmarkCheckDefault(b *testing.B) {
	f := compileFunc(b, `hdb(sym symbol, start date, end date = "2026-12-31")`)
	params := []byte(`["IBM","2026-01-02"]`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Check(params); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateBearer finds a user by its secret alone.
func BenchmarkAuthenticateBearer(b *testing.B) {
	p, err := Load("bench.allow", []byte(usersFile))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if u, err := p.Authenticate("", "carol-secret"); err != nil || u.Name != "carol" {
			b.Fatal(u, err)
		}
	}
}
