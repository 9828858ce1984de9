package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rowcast/rowcast/config"
)

// repoRoot is the repository's root, from this package's directory.
const repoRoot = "../.."

// dockerStage is one FROM … stage of a Dockerfile: its base, its name and
// its instructions (continuation lines joined), keyword upper-cased.
type dockerStage struct {
	from, name string
	lines      []string
}

// parseDockerfile splits a Dockerfile into stages; comments and blank
// lines are dropped and continued lines joined.
func parseDockerfile(t *testing.T, path string) []dockerStage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages []dockerStage
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if rest, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur += rest + " "
			continue
		}
		cur += trimmed
		keyword, args, _ := strings.Cut(cur, " ")
		keyword = strings.ToUpper(keyword)
		cur = ""
		if keyword == "FROM" {
			f := strings.Fields(args)
			st := dockerStage{}
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					st.name = f[i+1]
					i++
				case st.from == "":
					st.from = f[i]
				}
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			continue // ARG before FROM
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, keyword+" "+args)
	}
	return stages
}

func (s dockerStage) has(prefix string) bool {
	return slices.ContainsFunc(s.lines, func(l string) bool { return strings.HasPrefix(l, prefix) })
}

// TestDockerfile lints the image's recipe, since no container builder runs
// in CI here: a build stage compiling a static binary, and a final stage
// on distroless or scratch holding only it, run as a non-root user. With a
// container engine at hand (docker info answers), it also builds the image
// and runs `rowcast version` in it.
func TestDockerfile(t *testing.T) {
	path := filepath.Join(repoRoot, "cmd/rowcast/Dockerfile")
	stages := parseDockerfile(t, path)
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.from, "golang:") || build.name == "" {
		t.Errorf("first stage FROM %s AS %q, want a named golang stage", build.from, build.name)
	}
	static := false
	for _, l := range build.lines {
		if strings.HasPrefix(l, "RUN ") && strings.Contains(l, "go build") {
			static = strings.Contains(l, "CGO_ENABLED=0") && strings.Contains(l, "./cmd/rowcast")
		}
	}
	if !static {
		t.Error("the build stage does not build ./cmd/rowcast with CGO_ENABLED=0 (a static binary)")
	}
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") && final.from != "scratch" {
		t.Errorf("final stage FROM %s, want distroless static or scratch", final.from)
	}
	var user string
	for _, l := range final.lines {
		if u, ok := strings.CutPrefix(l, "USER "); ok {
			user = strings.TrimSpace(u)
		}
		if strings.HasPrefix(l, "COPY ") && !strings.Contains(l, "--from="+build.name) {
			t.Errorf("final stage copies from the build context (%q): only the binary belongs in the image", l)
		}
		if strings.HasPrefix(l, "ENV ") && strings.Contains(strings.ToUpper(l), "SECRET") {
			t.Errorf("final stage sets a secret in the image: %q", l)
		}
	}
	name, _, _ := strings.Cut(user, ":")
	if name == "" || name == "root" || name == "0" {
		t.Errorf("final stage USER %q, want a non-root user", user)
	}
	if !final.has(`ENTRYPOINT ["/rowcast"]`) {
		t.Errorf("final stage has no ENTRYPOINT [\"/rowcast\"]: %q", final.lines)
	}
	ignore, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", "**/node_modules"} {
		if !slices.Contains(strings.Fields(string(ignore)), want) {
			t.Errorf(".dockerignore lacks %s: the build context would carry it", want)
		}
	}

	if exec.Command("docker", "info").Run() != nil {
		t.Log("no container engine (docker info fails): the Dockerfile was linted, not built")
		return
	}
	tag := "rowcast-test:" + time.Now().Format("20060102150405")
	if out, err := exec.Command("docker", "build", "-f", path, "-t", tag, repoRoot).CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	defer exec.Command("docker", "rmi", tag).Run()
	out, err := exec.Command("docker", "run", "--rm", tag, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rowcast") {
		t.Fatalf("docker run %s version: %v\n%s", tag, err, out)
	}
}

// TestRailwayConfig: railway.json builds the image from the Dockerfile,
// installs before each deploy, checks readiness, and gives a draining
// replica longer than the relay's default shutdown.grace.
func TestRailwayConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "railway.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rc struct {
		Build struct {
			Builder        string `json:"builder"`
			DockerfilePath string `json:"dockerfilePath"`
		} `json:"build"`
		Deploy struct {
			PreDeployCommand []string `json:"preDeployCommand"`
			StartCommand     string   `json:"startCommand"`
			HealthcheckPath  string   `json:"healthcheckPath"`
			DrainingSeconds  int      `json:"drainingSeconds"`
		} `json:"deploy"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&rc); err != nil {
		t.Fatal(err)
	}
	if rc.Build.Builder != "DOCKERFILE" {
		t.Errorf("builder %q, want DOCKERFILE", rc.Build.Builder)
	}
	if _, err := os.Stat(filepath.Join(repoRoot, rc.Build.DockerfilePath)); err != nil {
		t.Errorf("dockerfilePath: %v", err)
	}
	if rc.Deploy.StartCommand != "/rowcast serve" || !slices.Equal(rc.Deploy.PreDeployCommand, []string{"/rowcast install"}) {
		t.Errorf("start %q, pre-deploy %q", rc.Deploy.StartCommand, rc.Deploy.PreDeployCommand)
	}
	if rc.Deploy.HealthcheckPath != "/readyz" {
		t.Errorf("healthcheckPath %q, want /readyz", rc.Deploy.HealthcheckPath)
	}
	if grace := config.Defaults().Shutdown.Grace; time.Duration(rc.Deploy.DrainingSeconds)*time.Second <= grace {
		t.Errorf("drainingSeconds %d, want more than shutdown.grace (%v)", rc.Deploy.DrainingSeconds, grace)
	}
}

// TestComposeFile: compose.yaml's relay builds from the Dockerfile, listens
// on every interface inside the container and is given longer to stop than
// the relay's default shutdown.grace.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cf struct {
		Services map[string]struct {
			Build struct {
				Context    string `yaml:"context"`
				Dockerfile string `yaml:"dockerfile"`
			} `yaml:"build"`
			Environment     map[string]string `yaml:"environment"`
			StopGracePeriod string            `yaml:"stop_grace_period"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &cf); err != nil {
		t.Fatal(err)
	}
	relay, ok := cf.Services["relay"]
	if !ok {
		t.Fatal("no relay service")
	}
	if _, err := os.Stat(filepath.Join(repoRoot, relay.Build.Context, relay.Build.Dockerfile)); err != nil {
		t.Errorf("build: %v", err)
	}
	if relay.Environment["ROWCAST_LISTEN"] != "0.0.0.0:8080" {
		t.Errorf("ROWCAST_LISTEN %q: the relay listens on loopback by default, unreachable from outside its container",
			relay.Environment["ROWCAST_LISTEN"])
	}
	stop, err := time.ParseDuration(relay.StopGracePeriod)
	if err != nil || stop <= config.Defaults().Shutdown.Grace {
		t.Errorf("stop_grace_period %q, want more than shutdown.grace", relay.StopGracePeriod)
	}
}

// TestChartSchemaKnowsEveryKey: wherever the chart's values.schema.json
// closes an object of the relay's configuration (additionalProperties
// false), it lists every key the relay reads there, so the schema never
// refuses a valid configuration.
func TestChartSchemaKnowsEveryKey(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "charts/rowcast/values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	closed := 0
	var walk func(raw json.RawMessage, typ reflect.Type, path string)
	walk = func(raw json.RawMessage, typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		var node struct {
			Properties map[string]json.RawMessage `json:"properties"`
			Additional *bool                      `json:"additionalProperties"`
			Items      json.RawMessage            `json:"items"`
			OneOf      []json.RawMessage          `json:"oneOf"`
		}
		if err := json.Unmarshal(raw, &node); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for _, alt := range node.OneOf {
			walk(alt, typ, path)
		}
		if node.Items != nil {
			walk(node.Items, typ, path+"[]")
		}
		if typ.Kind() != reflect.Struct {
			return
		}
		if node.Additional != nil && !*node.Additional {
			closed++
		}
		for _, f := range reflect.VisibleFields(typ) {
			key, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if key == "" || key == "-" {
				continue
			}
			sub, ok := node.Properties[key]
			switch {
			case ok:
				walk(sub, f.Type, path+"."+key)
			case node.Additional != nil && !*node.Additional:
				t.Errorf("values.schema.json refuses %s.%s, a key the relay reads", path, key)
			}
		}
	}
	walk(schema.Properties["config"], reflect.TypeFor[config.Config](), "config")
	if closed == 0 {
		t.Fatal("no closed object found under config: the walk does not follow the schema")
	}
}
