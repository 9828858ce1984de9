package config

import (
	"fmt"
	"maps"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Defaults returns the built-in configuration: every documented default,
// and no database URL, JWT secret or tables, which have none.
func Defaults() Config {
	return Config{
		Capture: Capture{
			Mode:         ModeTrigger,
			Notify:       new(true),
			PollMin:      5 * time.Millisecond,
			PollMax:      time.Second,
			TickInterval: 2 * time.Millisecond,
			Slot:         "rowcast",
			Publication:  "rowcast",
			GroupPause:   500 * time.Microsecond,
		},
		Listen: "127.0.0.1:8080",
		Auth:   Auth{UserClaim: "sub", TeamClaim: "teamId", MaxToken: 8 << 10, Algorithms: []string{}},
		History: History{
			Retention:     24 * time.Hour,
			PruneInterval: time.Minute,
		},
		Sessions: Sessions{
			Heartbeat:      25 * time.Second,
			ConnectTimeout: 45 * time.Second,
			QueueSize:      256,
			QueueBytes:     16 << 20,
			MaxMessageSize: 4096,
			RateLimit:      20,
			RateBurst:      50,
			RateStrikes:    20,
			ReplayLimit:    100000,
			SIOPolling:     new(true),

			MaxSubscribeEntities: 64,
		},
		Limits: Limits{
			SessionsPerUser:    50,
			SessionsPerAddress: 1000,
			SessionsTotal:      20000,
			UpgradeRate:        50,
			UpgradeBurst:       200,
		},
		Log:      Log{Level: "info", Format: "text"},
		Shutdown: Shutdown{Grace: 10 * time.Second, Drain: 5 * time.Second},
	}
}

// SIOPollingEnabled reports whether Socket.IO's polling transport is served:
// SIOPolling, or true when SIOPolling is nil.
func (s Sessions) SIOPollingEnabled() bool {
	return s.SIOPolling == nil || *s.SIOPolling
}

// NotifyEnabled reports whether the pg_notify doorbell is on: Notify, or
// true when Notify is nil.
func (c Capture) NotifyEnabled() bool {
	return c.Notify == nil || *c.Notify
}

// LoadOptions names the sources Load reads.
type LoadOptions struct {
	// File is a YAML configuration file. Empty: none. A file named here
	// that does not exist is an error.
	File string
	// Env is the environment in os.Environ form ("KEY=value"); nil means
	// none. Load reads ROWCAST_<KEY> for every key except tables (dots
	// become underscores: ROWCAST_DATABASE_URL, ROWCAST_AUTH_JWT_SECRET),
	// and ROWCAST_TABLES, a comma-separated list of table names that
	// replaces the file's tables (each with its defaults),
	// and DATABASE_URL for database.url when ROWCAST_DATABASE_URL is
	// absent (SENTRY_DSN and SENTRY_ENVIRONMENT likewise, and PORT for
	// listen, as ":PORT", when ROWCAST_LISTEN is absent). Empty values are ignored. List keys (origins) take a
	// comma-separated list. Other ROWCAST_ variables are ignored.
	Env []string
	// Set holds flag overrides by dotted key ("listen", "database.url"),
	// the values written as in the environment. A key that is not a
	// configuration key is reported as a problem.
	Set map[string]string
}

// Load builds the effective configuration: Defaults, overlaid by the YAML
// file, overlaid by the environment, overlaid by Set. Table entries get
// Table.WithDefaults; an entry may also be written as a bare table name.
// Durations use Go syntax ("500ms", "24h").
//
// When the configuration has problems (unknown keys anywhere, values of the
// wrong type, and everything Validate reports), Load returns a *Problems
// listing all of them, each naming its key path and, for values from the
// environment or a flag, where it came from. A file that cannot be read or
// is not YAML is reported alone as a wrapped error (errors.Is works with
// fs.ErrNotExist). No error message contains a secret.
//
// With a *Problems, Load also returns the configuration as far as it could
// be decoded (a key with a problem keeps its default or is partly set), so
// that `rowcast config check` can go on to check the database and report
// everything at once. It must not be used to run anything.
func Load(opts LoadOptions) (*Config, error) { return Overlay(Defaults(), opts) }

// Overlay is Load on base instead of Defaults: the file, the environment
// and Set override what base says (a configuration a command built for
// itself, such as a benchmark's relay).
func Overlay(base Config, opts LoadOptions) (*Config, error) {
	v := viper.New()
	if opts.File != "" {
		b, err := os.ReadFile(opts.File)
		if err != nil {
			return nil, fmt.Errorf("load config: %w", err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("load config: parse %s: %w", opts.File, err)
		}
		if err := v.MergeConfigMap(m); err != nil {
			return nil, fmt.Errorf("load config: merge %s: %w", opts.File, err)
		}
	}

	var d decoder
	keys := leafKeys()
	origin := make(map[string]string) // key -> where its value came from
	env := environ(opts.Env)
	for _, k := range keys {
		name := envName(k)
		val := env[name]
		// The names the platforms and Sentry's own SDKs use.
		if fallback, ok := map[string]string{"database.url": "DATABASE_URL", "sentry.dsn": "SENTRY_DSN",
			"sentry.environment": "SENTRY_ENVIRONMENT"}[k]; ok && val == "" {
			name, val = fallback, env[fallback]
		}
		// PORT, as Railway, Render, Fly.io and Cloud Run set it: every
		// interface on that port.
		if k == "listen" && val == "" && env["PORT"] != "" {
			name, val = "PORT", ":"+env["PORT"]
		}
		if val == "" {
			continue
		}
		v.Set(k, val)
		origin[k] = name
	}
	// ROWCAST_TABLES lists tables by name, each with the defaults (a
	// platform without a file, such as Railway); it replaces the file's
	// list.
	if val := env["ROWCAST_TABLES"]; strings.TrimSpace(val) != "" {
		var items []any
		for _, name := range strings.Split(val, ",") {
			items = append(items, strings.TrimSpace(name))
		}
		v.Set("tables", items)
		origin["tables"] = "ROWCAST_TABLES"
	}
	for _, raw := range slices.Sorted(maps.Keys(opts.Set)) {
		k := strings.ToLower(strings.TrimSpace(raw))
		if i, field, ok := tableKey(k); ok {
			d.setTable(v, raw, i, field, opts.Set[raw])
			continue
		}
		if !slices.Contains(keys, k) {
			d.fail(raw, "unknown key (from a flag)%s", suggest(k, keys))
			continue
		}
		v.Set(k, opts.Set[raw])
		origin[k] = "a flag"
	}

	cfg := base
	d.decode("", v.AllSettings(), reflect.ValueOf(&cfg).Elem())
	for i := range cfg.Tables {
		cfg.Tables[i] = cfg.Tables[i].WithDefaults()
	}

	all := d.probs
	for _, p := range cfg.problems() {
		if !slices.ContainsFunc(d.probs, func(q Problem) bool { return within(p.Key, q.Key) }) {
			all = append(all, p)
		}
	}
	if len(all) == 0 {
		return &cfg, nil
	}
	for i, p := range all {
		key, _, _ := strings.Cut(p.Key, "[")
		if o, ok := origin[key]; ok && !strings.Contains(p.Msg, "(from ") {
			all[i].Msg += " (from " + o + ")"
		}
	}
	return &cfg, newProblems(all)
}

// tableKey parses a flag key of the form tables[i].field.
func tableKey(k string) (i int, field string, ok bool) {
	rest, ok := strings.CutPrefix(k, "tables[")
	if !ok {
		return 0, "", false
	}
	idx, field, ok := strings.Cut(rest, "].")
	if !ok {
		return 0, "", false
	}
	i, err := strconv.Atoi(idx)
	if err != nil || i < 0 {
		return 0, "", false
	}
	return i, field, true
}

// setTable overrides one key of a table entry the file lists, from a flag
// (tables[2].team_column=org_id); a list key takes a comma-separated list.
func (d *decoder) setTable(v *viper.Viper, raw string, i int, field, val string) {
	var known []string
	for _, f := range reflect.VisibleFields(reflect.TypeFor[Table]()) {
		known = append(known, tagName(f))
	}
	if !slices.Contains(known, field) {
		d.fail(raw, "unknown table key (from a flag)%s", suggest(field, known))
		return
	}
	items, _ := v.Get("tables").([]any)
	if i >= len(items) {
		d.fail(raw, "the configuration lists %d table(s); a flag can change an entry the file lists, not add one (from a flag)", len(items))
		return
	}
	items = slices.Clone(items)
	entry := map[string]any{}
	switch it := items[i].(type) {
	case string:
		entry["table"] = it
	default:
		if m, ok := asMap(it); ok {
			maps.Copy(entry, m)
		}
	}
	entry[field] = val
	items[i] = entry
	v.Set("tables", items)
}

// within reports whether path is base or lies under it.
func within(path, base string) bool {
	if !strings.HasPrefix(path, base) {
		return false
	}
	rest := path[len(base):]
	return rest == "" || rest[0] == '.' || rest[0] == '['
}

// environ turns os.Environ-form entries into a map; later entries win.
func environ(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// envName is the environment variable that sets key.
func envName(key string) string {
	return "ROWCAST_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// leafKeys lists the dotted keys that the environment and flags can set:
// every scalar and string-list field of Config, but not tables.
func leafKeys() []string {
	var keys []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			key := joinPath(prefix, tagName(f))
			switch {
			case f.Type == reflect.TypeFor[time.Duration]():
				keys = append(keys, key)
			case f.Type.Kind() == reflect.Struct:
				walk(key, f.Type)
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				// tables: file only
			default:
				keys = append(keys, key)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
	return keys
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	return name
}

func joinPath(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// isSecret reports whether the value at path must never be printed.
func isSecret(path string) bool {
	return path == "auth.jwt_secret" || path == "database.url" || path == "database.listen_url" || path == "sentry.dsn"
}

// decoder copies a generic settings tree onto typed fields, recording a
// problem for every unknown key and every value of the wrong type.
type decoder struct {
	probs []Problem
}

func (d *decoder) fail(path, format string, args ...any) {
	d.probs = append(d.probs, Problem{Key: path, Msg: fmt.Sprintf(format, args...)})
}

// decode stores in into out and reports whether it did. A nil in (YAML
// null) leaves out as it was.
func (d *decoder) decode(path string, in any, out reflect.Value) bool {
	if in == nil {
		return false
	}
	t := out.Type()
	if t == reflect.TypeFor[time.Duration]() {
		return d.duration(path, in, out)
	}
	switch t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		if !d.decode(path, in, p.Elem()) {
			return false
		}
		out.Set(p)
		return true
	case reflect.Struct:
		m, ok := asMap(in)
		if !ok {
			d.fail(path, "expected a mapping of keys, got %s", describe(path, in))
			return false
		}
		d.fields(path, m, out)
		return true
	case reflect.String:
		s, ok := in.(string)
		if !ok {
			d.fail(path, "expected a string, got %s; quote the value", describe(path, in))
			return false
		}
		out.SetString(s)
		return true
	case reflect.Bool:
		switch x := in.(type) {
		case bool:
			out.SetBool(x)
			return true
		case string:
			b, err := strconv.ParseBool(strings.TrimSpace(x))
			if err == nil {
				out.SetBool(b)
				return true
			}
		}
		d.fail(path, "%s is not a boolean (true or false)", describe(path, in))
		return false
	case reflect.Int, reflect.Int64:
		n, ok := toInt(in)
		if !ok || out.OverflowInt(n) {
			d.fail(path, "%s is not an integer", describe(path, in))
			return false
		}
		out.SetInt(n)
		return true
	case reflect.Float64:
		f, ok := toFloat(in)
		if !ok {
			d.fail(path, "%s is not a number", describe(path, in))
			return false
		}
		out.SetFloat(f)
		return true
	case reflect.Slice:
		return d.slice(path, in, out)
	}
	d.fail(path, "cannot be set (unsupported type %s)", t)
	return false
}

// fields decodes a mapping onto the struct out by mapstructure tag.
func (d *decoder) fields(path string, m map[string]any, out reflect.Value) {
	t := out.Type()
	index := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		if name := tagName(t.Field(i)); name != "" && name != "-" {
			index[name] = i
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		p := joinPath(path, k)
		i, ok := index[k]
		if !ok {
			d.fail(p, "unknown key%s", suggest(k, slices.Collect(maps.Keys(index))))
			continue
		}
		d.decode(p, m[k], out.Field(i))
	}
}

// slice decodes a list. A string stands for a comma-separated list of
// strings, or, for a list of tables, for a table entry by name.
func (d *decoder) slice(path string, in any, out reflect.Value) bool {
	elem := out.Type().Elem()
	if s, ok := in.(string); ok && elem.Kind() == reflect.String {
		var list []string
		for _, f := range strings.Split(s, ",") {
			if f = strings.TrimSpace(f); f != "" {
				list = append(list, f)
			}
		}
		out.Set(reflect.ValueOf(list))
		return true
	}
	items, ok := in.([]any)
	if !ok {
		d.fail(path, "expected a list, got %s", describe(path, in))
		return false
	}
	res := reflect.MakeSlice(out.Type(), 0, len(items))
	for i, item := range items {
		p := fmt.Sprintf("%s[%d]", path, i)
		v := reflect.New(elem).Elem()
		switch {
		case item == nil:
			d.fail(p, "is empty")
		case elem == reflect.TypeFor[Table]():
			if name, ok := item.(string); ok {
				v.Set(reflect.ValueOf(Table{Table: name}))
			} else if m, ok := asMap(item); ok {
				d.fields(p, m, v)
			} else {
				d.fail(p, "expected a table entry (a mapping with at least table:, or a table name), got %s", describe(p, item))
			}
		default:
			d.decode(p, item, v)
		}
		// Keep failed items too, so that later indexes match the file.
		res = reflect.Append(res, v)
	}
	out.Set(res)
	return true
}

// duration decodes a Go duration string. A bare number is refused unless
// it is 0, since its unit would be a guess.
func (d *decoder) duration(path string, in any, out reflect.Value) bool {
	const hint = "use Go syntax such as 500ms, 10s, 1m or 24h"
	switch x := in.(type) {
	case string:
		dur, err := time.ParseDuration(strings.TrimSpace(x))
		if err != nil {
			d.fail(path, "%s is not a duration; %s", describe(path, in), hint)
			return false
		}
		out.SetInt(int64(dur))
		return true
	case int, int64, uint64, float64:
		if f, ok := toFloat(x); ok && f == 0 {
			out.SetInt(0)
			return true
		}
		d.fail(path, "%s has no unit; %s", describe(path, in), hint)
		return false
	}
	d.fail(path, "expected a duration, got %s; %s", describe(path, in), hint)
	return false
}

func asMap(in any) (map[string]any, bool) {
	switch m := in.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[strings.ToLower(fmt.Sprint(k))] = v
		}
		return out, true
	}
	return nil, false
}

func toInt(in any) (int64, bool) {
	switch x := in.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case int32:
		return int64(x), true
	case uint64:
		return int64(x), x <= math.MaxInt64
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < math.MaxInt64 {
			return int64(x), true
		}
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		return n, err == nil
	}
	return 0, false
}

func toFloat(in any) (float64, bool) {
	switch x := in.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return f, err == nil
	}
	return 0, false
}

// describe renders a value for a message, hiding it when path is secret.
func describe(path string, in any) string {
	hide := isSecret(path)
	switch x := in.(type) {
	case string:
		if hide {
			return "a string"
		}
		return strconv.Quote(x)
	case bool, int, int64, int32, uint64, float64:
		if hide {
			return kindName(in)
		}
		return fmt.Sprint(x)
	case time.Time:
		if hide {
			return "a timestamp"
		}
		return x.Format(time.RFC3339)
	}
	return kindName(in)
}

func kindName(in any) string {
	switch in.(type) {
	case bool:
		return "a boolean"
	case int, int64, int32, uint64, float64:
		return "a number"
	case map[string]any, map[any]any:
		return "a mapping"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("a value of type %T", in)
}

// suggest returns "; did you mean X?" for the known key closest to key,
// or "" when none is close.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	if len(key) < 5 {
		bestDist = 2
	}
	for _, k := range known {
		if dist := editDistance(key, k); dist < bestDist || dist == bestDist && k < best {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return "; did you mean " + best + "?"
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
