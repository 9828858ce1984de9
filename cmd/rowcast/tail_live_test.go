package main

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// screen replays what tail writes to a terminal (both stdout and stderr)
// and returns the rows it shows: text, \n, \r, ESC[nA (up), ESC[J (erase
// below) and ESC[?7l / ESC[?7h (autowrap, which the rows here never need).
// It fails the test on any other control sequence.
func screen(t *testing.T, out string) []string {
	t.Helper()
	rows := []string{""}
	y, x := 0, 0
	put := func(s string) {
		r := []rune(rows[y])
		for len(r) < x {
			r = append(r, ' ')
		}
		r = append(r[:x], []rune(s)...)
		rows[y] = string(r)
		x += len([]rune(s))
	}
	for i := 0; i < len(out); {
		switch c := out[i]; {
		case c == '\n':
			y, x = y+1, 0
			if y == len(rows) {
				rows = append(rows, "")
			}
			i++
		case c == '\r':
			x = 0
			i++
		case c == 0x1b:
			end := strings.IndexAny(out[i:], "AJhlm")
			if end < 0 || out[i+1] != '[' {
				t.Fatalf("unknown escape at %q", out[i:])
			}
			seq, arg := out[i+end], out[i+2:i+end]
			switch {
			case seq == 'A':
				n, err := strconv.Atoi(arg)
				if err != nil || n > y {
					t.Fatalf("cursor up %q from row %d", arg, y)
				}
				y -= n
			case seq == 'J' && arg == "":
				rows[y] = string([]rune(rows[y])[:min(x, len([]rune(rows[y])))])
				rows = rows[:y+1]
			case (seq == 'l' || seq == 'h') && arg == "?7":
			default:
				t.Fatalf("unexpected escape %q", out[i:i+end+1])
			}
			i += end + 1
		default:
			j := i
			for j < len(out) && out[j] != '\n' && out[j] != '\r' && out[j] != 0x1b {
				j++
			}
			put(out[i:j])
			i = j
		}
	}
	if rows[len(rows)-1] == "" {
		rows = rows[:len(rows)-1]
	}
	return rows
}

func taskFrame(event, id, fields string) string {
	return `{"type":"event","event":"ai:task:` + event + `","position":"p","data":{"taskId":"` + id + `",` + fields +
		`"timestamp":"2026-11-25T18:05:17Z"}}`
}

func TestTailLiveTaskLines(t *testing.T) {
	var term bytes.Buffer // stdout and stderr on one terminal
	tl := &tailer{stdout: &term, stderr: &term, style: tailStyle{loc: time.UTC}, live: &tailBoard{}}
	steps := []struct {
		frame string
		want  []string // the screen after the frame, without the time column
	}{
		{taskFrame("started", "task-a", `"taskType":"create_escrow_from_address","message":"Creating an escrow",`), []string{
			"ai:task:started  task task-a  [--------------------] 0%  create_escrow_from_address: Creating an escrow",
			"ai:task:started  task task-a  [--------------------] 0%  create_escrow_from_address: Creating an escrow",
		}},
		{taskFrame("progress", "task-a", `"progress":30,"message":"Looking up 12 Oak St",`), []string{
			"ai:task:started  task task-a  [--------------------] 0%  create_escrow_from_address: Creating an escrow",
			"ai:task:progress  task task-a  [######--------------] 30%  Looking up 12 Oak St",
		}},
		{createdFrame, []string{
			"ai:task:started  task task-a  [--------------------] 0%  create_escrow_from_address: Creating an escrow",
			"escrow:created   team 7  escrow 43  by user 3  " + `property_address="12 Oak St" city=Austin status=open purchase_price=525000.00 description="Four-bedroom colonial, detached garage,…" …`,
			"ai:task:progress  task task-a  [######--------------] 30%  Looking up 12 Oak St",
		}},
		{taskFrame("started", "task-b", `"taskType":"import_leads_csv","message":"Importing",`), []string{
			"ai:task:started  task task-a  [--------------------] 0%  create_escrow_from_address: Creating an escrow",
			"escrow:created   team 7  escrow 43  by user 3  " + `property_address="12 Oak St" city=Austin status=open purchase_price=525000.00 description="Four-bedroom colonial, detached garage,…" …`,
			"ai:task:started  task task-b  [--------------------] 0%  import_leads_csv: Importing",
			"ai:task:progress  task task-a  [######--------------] 30%  Looking up 12 Oak St",
			"ai:task:started  task task-b  [--------------------] 0%  import_leads_csv: Importing",
		}},
		{taskFrame("progress", "task-a", `"progress":60,"message":"Drafting",`), []string{
			"ai:task:started  task task-a  [--------------------] 0%  create_escrow_from_address: Creating an escrow",
			"escrow:created   team 7  escrow 43  by user 3  " + `property_address="12 Oak St" city=Austin status=open purchase_price=525000.00 description="Four-bedroom colonial, detached garage,…" …`,
			"ai:task:started  task task-b  [--------------------] 0%  import_leads_csv: Importing",
			"ai:task:progress  task task-a  [############--------] 60%  Drafting",
			"ai:task:started  task task-b  [--------------------] 0%  import_leads_csv: Importing",
		}},
		{`{"type":"resumed","position":"p","replayed":0}`, []string{
			"ai:task:started  task task-a  [--------------------] 0%  create_escrow_from_address: Creating an escrow",
			"escrow:created   team 7  escrow 43  by user 3  " + `property_address="12 Oak St" city=Austin status=open purchase_price=525000.00 description="Four-bedroom colonial, detached garage,…" …`,
			"ai:task:started  task task-b  [--------------------] 0%  import_leads_csv: Importing",
			"resumed: replayed 0 events", // a notice, on stderr
			"ai:task:progress  task task-a  [############--------] 60%  Drafting",
			"ai:task:started  task task-b  [--------------------] 0%  import_leads_csv: Importing",
		}},
		{taskFrame("completed", "task-a", `"result":{"escrowId":"43"},"message":"Escrow created",`), []string{
			"ai:task:started  task task-a  [--------------------] 0%  create_escrow_from_address: Creating an escrow",
			"escrow:created   team 7  escrow 43  by user 3  " + `property_address="12 Oak St" city=Austin status=open purchase_price=525000.00 description="Four-bedroom colonial, detached garage,…" …`,
			"ai:task:started  task task-b  [--------------------] 0%  import_leads_csv: Importing",
			"resumed: replayed 0 events",
			`ai:task:completed  task task-a  [####################] done  Escrow created  result={"escrowId":"43"}`,
			"ai:task:started  task task-b  [--------------------] 0%  import_leads_csv: Importing",
		}},
		{taskFrame("failed", "task-b", `"error":"row 4: invalid email \"x\"",`), []string{
			"ai:task:started  task task-a  [--------------------] 0%  create_escrow_from_address: Creating an escrow",
			"escrow:created   team 7  escrow 43  by user 3  " + `property_address="12 Oak St" city=Austin status=open purchase_price=525000.00 description="Four-bedroom colonial, detached garage,…" …`,
			"ai:task:started  task task-b  [--------------------] 0%  import_leads_csv: Importing",
			"resumed: replayed 0 events",
			`ai:task:completed  task task-a  [####################] done  Escrow created  result={"escrowId":"43"}`,
			`ai:task:failed   task task-b  failed: row 4: invalid email "x"`,
		}},
	}
	for i, st := range steps {
		if err := tl.print([]byte(st.frame)); err != nil {
			t.Fatal(err)
		}
		got := screen(t, term.String())
		for j := range got {
			if _, err := time.Parse("15:04:05.000 ", got[j][:min(13, len(got[j]))]); err == nil {
				got[j] = got[j][13:]
			}
		}
		if strings.Join(got, "\n") != strings.Join(st.want, "\n") {
			t.Fatalf("after frame %d the screen shows\n%s\nwant\n%s", i, strings.Join(got, "\n"), strings.Join(st.want, "\n"))
		}
	}
}

func TestTailLiveBoardKeepsAFewTasks(t *testing.T) {
	var term bytes.Buffer
	tl := &tailer{stdout: &term, stderr: &term, style: tailStyle{loc: time.UTC}, live: &tailBoard{}}
	n := tailMaxLiveTasks + 2
	for i := range n {
		if err := tl.print([]byte(taskFrame("progress", fmt.Sprint("t", i), `"progress":50,"message":"m",`))); err != nil {
			t.Fatal(err)
		}
	}
	got := screen(t, term.String())
	// The two that appeared first left the board for the log.
	if len(got) != n || !strings.Contains(got[0], "task t0 ") || !strings.Contains(got[1], "task t1 ") ||
		!strings.Contains(got[2], "task t2 ") || !strings.Contains(got[n-1], fmt.Sprintf("task t%d ", n-1)) {
		t.Fatalf("screen:\n%s", strings.Join(got, "\n"))
	}
	if tl.live.drawn != tailMaxLiveTasks {
		t.Errorf("board has %d rows, want %d", tl.live.drawn, tailMaxLiveTasks)
	}
}

func TestTailPlainWhenNotATerminal(t *testing.T) {
	if tailIsTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is a terminal")
	}
	var out, errb bytes.Buffer
	tl := &tailer{stdout: &out, stderr: &errb, style: tailStyle{loc: time.UTC}}
	for _, p := range []int{10, 30} {
		if err := tl.print([]byte(taskFrame("progress", "a", fmt.Sprintf(`"progress":%d,"message":"m",`, p)))); err != nil {
			t.Fatal(err)
		}
	}
	want := "18:05:17.000 ai:task:progress  task a  [##------------------] 10%  m\n" +
		"18:05:17.000 ai:task:progress  task a  [######--------------] 30%  m\n"
	if out.String() != want {
		t.Errorf("stdout %q, want %q", out.String(), want)
	}
}
