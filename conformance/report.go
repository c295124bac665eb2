package conformance

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Counts tallies verdicts.
type Counts struct {
	Pass, Fail, Unsupported int
}

func (c *Counts) add(s Status) {
	switch s {
	case Pass:
		c.Pass++
	case Fail:
		c.Fail++
	default:
		c.Unsupported++
	}
}

func (c Counts) String() string {
	return fmt.Sprintf("%d / %d / %d", c.Pass, c.Fail, c.Unsupported)
}

// Summary is the report's numbers.
type Summary struct {
	Cases int
	// ByCategory counts cases per category.
	ByCategory [numCategories]int
	// Clients counts, per client and per category, the client verdicts.
	Clients [][numCategories]Counts
	// Identical counts, per client, the cases passing in-process whose
	// outputs over the client equal the in-process outputs exactly (see Exact).
	Identical []int
	// LoadMismatches lists the cases whose model ONNX Runtime loads
	// in-process but the server did not, or the other way round.
	LoadMismatches []string
	// Regressions lists "case (client): reason" for every case that passes
	// in-process and does not pass over a client. The goal is none.
	Regressions []string
}

// Summarize computes the summary.
func (r *Report) Summarize() Summary {
	s := Summary{Cases: len(r.Results), Clients: make([][numCategories]Counts, len(r.Clients)), Identical: make([]int, len(r.Clients))}
	for _, res := range r.Results {
		s.ByCategory[res.Category]++
		if res.LoadedInProcess != res.Served && res.Category != BadTestData {
			s.LoadMismatches = append(s.LoadMismatches, fmt.Sprintf("%s: loaded in-process %v, by the server %v", res.Case, res.LoadedInProcess, res.Served))
		}
		for i, v := range res.Clients {
			s.Clients[i][res.Category].add(v.Status)
			if res.Category == InProcessPass && v.Status == Pass && v.SameAsInProcess {
				s.Identical[i]++
			}
			if res.Category == InProcessPass && v.Status != Pass {
				s.Regressions = append(s.Regressions, fmt.Sprintf("%s (%s): %s %s", res.Case, r.Clients[i], v.Status, v.Reason))
			}
		}
	}
	return s
}

// WriteSummary writes the summary as plain text.
func (r *Report) WriteSummary(w io.Writer) {
	s := r.Summarize()
	fmt.Fprintf(w, "ONNX backend conformance: %d cases from %s, ONNX Runtime %s, %s\n",
		s.Cases, r.DataDir, r.Runtime, r.Duration.Round(time.Second))
	for c := Category(0); c < numCategories; c++ {
		fmt.Fprintf(w, "  %-34s %4d\n", c.String()+":", s.ByCategory[c])
	}
	fmt.Fprintf(w, "per client, pass / fail / unsupported: cases passing in-process | all cases | identical to in-process\n")
	for i, name := range r.Clients {
		var all Counts
		for _, c := range s.Clients[i] {
			all.Pass += c.Pass
			all.Fail += c.Fail
			all.Unsupported += c.Unsupported
		}
		fmt.Fprintf(w, "  %-12s %-16s | %-16s | %d\n", name, s.Clients[i][InProcessPass], all, s.Identical[i])
	}
	fmt.Fprintf(w, "models loaded in-process but not by the server, or the other way round: %d (goal 0)\n", len(s.LoadMismatches))
	for _, m := range s.LoadMismatches {
		fmt.Fprintf(w, "  %s\n", m)
	}
	fmt.Fprintf(w, "cases passing in-process that fail over a client: %d (goal 0)\n", len(s.Regressions))
	for _, reg := range s.Regressions {
		fmt.Fprintf(w, "  %s\n", reg)
	}
}

// WriteMarkdown writes the full report: the summary, every case that does
// not pass with its reason, and a table of every case.
func (r *Report) WriteMarkdown(w io.Writer) {
	s := r.Summarize()
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("# ONNX backend conformance report\n\n")
	p("- Test data: `%s` (suites %s), %d cases\n", r.DataDir, strings.Join(Suites, ", "), s.Cases)
	p("- ONNX Runtime %s; tolerance rtol=%g, atol=%g (the ONNX backend runner's default), NaN equals NaN\n",
		r.Runtime, BackendTolerance.RTol, BackendTolerance.ATol)
	p("- Run time %s\n\n", r.Duration.Round(time.Second))

	p("## Summary\n\nCells are pass / fail / unsupported.\n\n")
	p("| category | cases |")
	for _, c := range r.Clients {
		p(" %s |", c)
	}
	p("\n|---|---:|")
	for range r.Clients {
		p("---|")
	}
	p("\n")
	for c := Category(0); c < numCategories; c++ {
		p("| %s | %d |", c, s.ByCategory[c])
		for i := range r.Clients {
			p(" %s |", s.Clients[i][c])
		}
		p("\n")
	}
	p("| **all** | %d |", s.Cases)
	for i := range r.Clients {
		var all Counts
		for _, c := range s.Clients[i] {
			all.Pass += c.Pass
			all.Fail += c.Fail
			all.Unsupported += c.Unsupported
		}
		p(" %s |", all)
	}
	p("\n| identical to in-process (of the cases passing in-process) | |")
	for i := range r.Clients {
		p(" %d |", s.Identical[i])
	}
	p("\n\n**Cases that pass in-process but not over a client: %d** (goal: 0).\n\n", len(s.Regressions))
	for _, reg := range s.Regressions {
		p("- %s\n", mdEscape(reg))
	}
	p("Models ONNX Runtime loads in-process but the server did not, or the other way round: %d (goal: 0).\n\n", len(s.LoadMismatches))
	for _, m := range s.LoadMismatches {
		p("- %s\n", mdEscape(m))
	}

	p("## By suite\n\n| suite | cases |")
	for c := Category(0); c < numCategories; c++ {
		p(" %s |", c)
	}
	p("\n|---|---:|%s\n", strings.Repeat("---:|", int(numCategories)))
	for _, suite := range Suites {
		var n int
		var by [numCategories]int
		for _, res := range r.Results {
			if strings.HasPrefix(res.Case, suite+"/") {
				n++
				by[res.Category]++
			}
		}
		p("| %s | %d |", suite, n)
		for _, v := range by {
			p(" %d |", v)
		}
		p("\n")
	}

	for _, c := range []Category{InProcessFail, ORTUnsupported, ProtocolUnsupported, BadTestData} {
		p("\n## %s (%d)\n\n", upperFirst(c.String()), s.ByCategory[c])
		for _, res := range r.Results {
			if res.Category != c {
				continue
			}
			p("- `%s`: %s", res.Case, mdEscape(res.InProcess.Reason))
			switch c {
			case InProcessFail:
				p(" — over the clients: %s", mdEscape(clientSummary(r.Clients, res.Clients)))
			case ORTUnsupported, BadTestData:
				p(" — the server answered: %s", mdEscape(clientCodes(r.Clients, res.Clients)))
			}
			p("\n")
		}
	}

	p("\n## Passing in-process and over the clients, but not identical to in-process\n\n")
	p("Outputs within tolerance of the expected ones whose bytes differ from what ONNX Runtime returned in-process")
	p(" (nondeterministic operators, or a transport altering values).\n\n")
	for _, res := range r.Results {
		if res.Category != InProcessPass {
			continue
		}
		var differ []string
		for i, v := range res.Clients {
			if v.Status == Pass && !v.SameAsInProcess {
				differ = append(differ, r.Clients[i])
			}
		}
		if differ != nil {
			p("- `%s`: %s\n", res.Case, strings.Join(differ, ", "))
		}
	}

	p("\n## All cases\n\n| case | in-process |")
	for _, c := range r.Clients {
		p(" %s |", c)
	}
	p("\n|---|---|%s\n", strings.Repeat("---|", len(r.Clients)))
	for _, res := range r.Results {
		p("| `%s` | %s |", res.Case, res.InProcess.Status)
		for _, v := range res.Clients {
			p(" %s |", v.Status)
		}
		p("\n")
	}
}

// clientSummary says, for a case failing in-process, how each client
// fared and whether it returned exactly the in-process outputs.
func clientSummary(names []string, vs []Verdict) string {
	var parts []string
	for i, v := range vs {
		s := names[i] + " " + string(v.Status)
		if v.SameAsInProcess {
			s += " (identical to in-process)"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// clientCodes lists the status each client got.
func clientCodes(names []string, vs []Verdict) string {
	var parts []string
	for i, v := range vs {
		code := v.Code
		if code == "" {
			code = string(v.Status)
		}
		parts = append(parts, names[i]+" "+code)
	}
	return strings.Join(parts, ", ")
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", `\|`)
	return s
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
