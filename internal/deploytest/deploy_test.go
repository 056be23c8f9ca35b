// Package deploytest checks docker-compose.yml and the Dockerfile against
// the code: that every variable they set is one chatq reads, and that they
// keep the properties the deployment relies on.
package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/google/go-cmp/cmp"
	"github.com/kelseyhightower/envconfig"

	"github.com/chatq/chatq/config"
)

// root is the repository root, relative to this package.
const root = "../.."

// loadCompose loads docker-compose.yml as docker compose would, with no
// variables set, so that the development defaults apply.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(abs, "docker-compose.yml")},
		cli.WithName("chatq"),
		cli.WithWorkingDirectory(abs),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return s
}

// knownVariables is every variable config.Load reads, named by envconfig
// itself from config.Config, so that it cannot drift from the code.
func knownVariables(t *testing.T) map[string]bool {
	t.Helper()
	var buf bytes.Buffer
	var c config.Config
	tw := tabwriter.NewWriter(&buf, 0, 0, 0, ' ', 0)
	if err := envconfig.Usagef(config.Prefix, &c, tw, "{{range .}}{{usage_key .}}\n{{end}}"); err != nil {
		t.Fatalf("list config variables: %v", err)
	}
	known := make(map[string]bool)
	for _, name := range strings.Fields(buf.String()) {
		known[name] = true
	}
	// Guards the listing itself: a broken template would make every check
	// below pass.
	for _, name := range []string{"CHATQ_REDIS_URL", "CHATQ_CA_APP_SECRET", "CHATQ_SANDBOX_ADDR"} {
		if !known[name] {
			t.Fatalf("config variables %v lack %s", known, name)
		}
	}
	return known
}

// chatqEnv returns the CHATQ_ variables a service sets.
func chatqEnv(s types.ServiceConfig) map[string]string {
	env := make(map[string]string)
	for k, v := range s.Environment {
		if strings.HasPrefix(k, config.Prefix+"_") && v != nil {
			env[k] = *v
		}
	}
	return env
}

func TestComposeServices(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"redis", "api", "worker", "sandbox"} {
		service(t, p, name)
	}

	redis := service(t, p, "redis")
	cmdline := strings.Join(redis.Command, " ")
	for _, want := range []string{"--appendonly yes", "--maxmemory-policy noeviction"} {
		if !strings.Contains(cmdline, want) {
			t.Errorf("redis command %q lacks %q", cmdline, want)
		}
	}
	if !slices.ContainsFunc(redis.Volumes, func(v types.ServiceVolumeConfig) bool {
		_, declared := p.Volumes[v.Source]
		return v.Type == types.VolumeTypeVolume && v.Target == "/data" && declared
	}) {
		t.Errorf("redis has no named volume at /data: %+v", redis.Volumes)
	}
	if redis.HealthCheck == nil || !slices.Contains(redis.HealthCheck.Test, "ping") {
		t.Errorf("redis has no ping healthcheck: %+v", redis.HealthCheck)
	}

	worker := service(t, p, "worker")
	if worker.ContainerName != "" {
		t.Errorf("worker has container_name %q, which stops --scale worker=N", worker.ContainerName)
	}
	if len(worker.Ports) > 0 {
		t.Errorf("worker publishes ports %+v, which stops --scale worker=N", worker.Ports)
	}
	// Docker kills a container stop_grace_period after SIGTERM; a worker
	// needs its shutdown timeout to record the sends on the wire.
	shutdown := config.Default().CATimeout + 5*time.Second
	if worker.StopGracePeriod == nil || time.Duration(*worker.StopGracePeriod) <= shutdown {
		t.Errorf("worker stop_grace_period = %v, want more than the default shutdown timeout %s", worker.StopGracePeriod, shutdown)
	}

	for _, tc := range []struct {
		service, command string
		port             uint32
	}{
		{"api", "api", 8080},
		{"worker", "worker", 0},
		{"sandbox", "sandbox", 8090},
	} {
		s := service(t, p, tc.service)
		if diff := cmp.Diff([]string{tc.command}, []string(s.Command)); diff != "" {
			t.Errorf("%s command (-want +got):\n%s", tc.service, diff)
		}
		if s.Build == nil {
			t.Errorf("%s is not built from the Dockerfile", tc.service)
		}
		if tc.port != 0 && !slices.ContainsFunc(s.Ports, func(pc types.ServicePortConfig) bool {
			return pc.Target == tc.port && pc.Published == strconv.Itoa(int(tc.port))
		}) {
			t.Errorf("%s does not publish port %d: %+v", tc.service, tc.port, s.Ports)
		}
	}
	for _, name := range []string{"api", "worker"} {
		s := service(t, p, name)
		if dep, ok := s.DependsOn["redis"]; !ok || dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s does not wait for a healthy redis: %+v", name, s.DependsOn)
		}
		if got := chatqEnv(s)["CHATQ_REDIS_URL"]; got != "redis://redis:6379/0" {
			t.Errorf("%s CHATQ_REDIS_URL = %q, want the redis service", name, got)
		}
	}
}

func TestComposeEnvironment(t *testing.T) {
	p := loadCompose(t)
	known := knownVariables(t)
	for _, name := range []string{"api", "worker", "sandbox"} {
		t.Run(name, func(t *testing.T) {
			env := chatqEnv(service(t, p, name))
			if len(env) == 0 {
				t.Fatalf("%s sets no CHATQ_ variable", name)
			}
			for k := range env {
				if !known[k] {
					t.Errorf("%s sets %s, which chatq does not read", name, k)
				}
			}
			// The values must pass chatq's own validation.
			for _, kv := range os.Environ() {
				k, _, _ := strings.Cut(kv, "=")
				if strings.HasPrefix(k, config.Prefix+"_") {
					t.Setenv(k, "")
					os.Unsetenv(k)
				}
			}
			for k, v := range env {
				t.Setenv(k, v)
			}
			if _, err := config.Load(config.Default()); err != nil {
				t.Errorf("%s environment: %v", name, err)
			}
		})
	}

	// The sandbox must accept the credentials the workers send with.
	worker, sandbox := chatqEnv(service(t, p, "worker")), chatqEnv(service(t, p, "sandbox"))
	for _, k := range []string{"CHATQ_CA_APP_ID", "CHATQ_CA_APP_SECRET"} {
		if worker[k] == "" || worker[k] != sandbox[k] {
			t.Errorf("%s: worker has %q, sandbox %q; want the same, set", k, worker[k], sandbox[k])
		}
	}
	// chatq worker refuses to start without its sender number.
	if worker["CHATQ_CA_SOURCE"] == "" {
		t.Errorf("worker does not set CHATQ_CA_SOURCE, which chatq worker needs")
	}
	if got := worker["CHATQ_CA_BASE_URL"]; got != "http://sandbox:8090" {
		t.Errorf("worker CHATQ_CA_BASE_URL = %q, want the sandbox service by default", got)
	}
	for _, k := range []string{"CHATQ_HTTP_ADDR", "CHATQ_API_KEYS", "CHATQ_WEBHOOK_SECRET", "CHATQ_PUBLIC_URL"} {
		if _, ok := worker[k]; ok {
			t.Errorf("worker sets %s, which only the API uses", k)
		}
	}
}

// stage is one FROM section of a Dockerfile.
type stage struct {
	image, name  string
	instructions []string // each with its continuation lines joined
}

func parseDockerfile(t *testing.T, text string) []stage {
	t.Helper()
	var stages []stage
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		if f := strings.Fields(line); strings.EqualFold(f[0], "FROM") {
			st := stage{}
			args := slices.DeleteFunc(f[1:], func(a string) bool { return strings.HasPrefix(a, "--") })
			if len(args) > 0 {
				st.image = args[0]
			}
			if len(args) == 3 && strings.EqualFold(args[1], "AS") {
				st.name = args[2]
			}
			stages = append(stages, st)
			return
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile: %q before the first FROM", line)
		}
		last := &stages[len(stages)-1]
		last.instructions = append(last.instructions, line)
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	return stages
}

func instruction(line string) (keyword, rest string) {
	k, r, _ := strings.Cut(line, " ")
	return strings.ToUpper(k), strings.TrimSpace(r)
}

func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages := parseDockerfile(t, string(raw))
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s), want a build stage and a runtime stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	// The build: a static binary of ./cmd/chatq.
	buildRe := regexp.MustCompile(`\bgo build\b.*\s-o\s+(\S+).*\s\./cmd/chatq\s*$`)
	var cgoOff bool
	var binary string
	for _, line := range build.instructions {
		kw, rest := instruction(line)
		if (kw == "ENV" || kw == "RUN" || kw == "ARG") && strings.Contains(rest, "CGO_ENABLED=0") {
			cgoOff = true
		}
		if m := buildRe.FindStringSubmatch(line); kw == "RUN" && m != nil {
			binary = m[1]
		}
	}
	if !cgoOff {
		t.Error("the build stage does not set CGO_ENABLED=0, so the binary may need libc")
	}
	if binary == "" {
		t.Error("the build stage does not go build -o ... ./cmd/chatq")
	}

	// Its Go must be able to build the module.
	if v := goVersion(t); !strings.HasPrefix(build.image, "golang:") || !goAtLeast(strings.TrimPrefix(build.image, "golang:"), v) {
		t.Errorf("build image %q is older than go.mod's go %s", build.image, v)
	}

	// The runtime: nothing but the binary, not root.
	if final.image != "scratch" && !strings.HasPrefix(final.image, "gcr.io/distroless/") {
		t.Errorf("final image %q is neither distroless nor scratch", final.image)
	}
	var user, entrypoint string
	var copied bool
	for _, line := range final.instructions {
		kw, rest := instruction(line)
		switch kw {
		case "USER":
			user = rest
		case "ENTRYPOINT":
			entrypoint = rest
		case "COPY":
			f := strings.Fields(rest)
			if binary != "" && slices.Contains(f, "--from="+build.name) && slices.Contains(f, binary) && f[len(f)-1] == "/chatq" {
				copied = true
			}
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("final stage USER = %q, want a non-root user", user)
	}
	if !copied {
		t.Errorf("final stage does not COPY --from=%s %s /chatq", build.name, binary)
	}
	if entrypoint != `["/chatq"]` {
		t.Errorf("ENTRYPOINT %s, want [\"/chatq\"]", entrypoint)
	}
}

// goVersion returns the go directive of go.mod.
func goVersion(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go\s+(\S+)\s*$`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

// goAtLeast reports whether the image tag (such as 1.26 or 1.26.8-bookworm)
// provides at least the major.minor of version.
func goAtLeast(tag, version string) bool {
	parse := func(s string) (int, int, bool) {
		s, _, _ = strings.Cut(s, "-")
		parts := strings.Split(s, ".")
		if len(parts) < 2 {
			return 0, 0, false
		}
		major, err1 := strconv.Atoi(parts[0])
		minor, err2 := strconv.Atoi(parts[1])
		return major, minor, err1 == nil && err2 == nil
	}
	tm, tn, ok1 := parse(tag)
	vm, vn, ok2 := parse(version)
	return ok1 && ok2 && (tm > vm || tm == vm && tn >= vn)
}
