package config

import (
	"fmt"
	"io"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// redacted replaces a secret in printed configuration.
const redacted = "*****"

// WriteYAML writes c as YAML that Load reads back, with secrets hidden:
// auth.jwt_secret is printed as "*****" when set, and a password inside
// database.url (URL user info, a password or sslpassword parameter, or a
// password= keyword) as "*****"; a database.url that cannot be parsed is
// hidden whole. Durations are Go duration strings ("24h", "1m30s"). Every
// top-level key is printed; table entries omit their empty fields.
func (c *Config) WriteYAML(w io.Writer) error {
	root, err := yamlNode("", reflect.ValueOf(*c), false)
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// yamlNode renders v, found at path, as a YAML node. omitEmpty drops zero
// fields of structs.
func yamlNode(path string, v reflect.Value, omitEmpty bool) (*yaml.Node, error) {
	t := v.Type()
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return scalar(formatDuration(time.Duration(v.Int())))
	case path == "auth.jwt_secret" || path == "sentry.dsn":
		if v.String() == "" {
			return scalar("")
		}
		return scalar(redacted)
	case path == "database.url" || path == "database.listen_url":
		return scalar(RedactURL(v.String()))
	}
	switch t.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
		}
		return yamlNode(path, v.Elem(), omitEmpty)
	case reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode}
		for i := range t.NumField() {
			f := v.Field(i)
			if omitEmpty && f.IsZero() {
				continue
			}
			name := tagName(t.Field(i))
			val, err := yamlNode(joinPath(path, name), f, omitEmpty)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name}, val)
		}
		return n, nil
	case reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode}
		if v.Len() == 0 {
			n.Style = yaml.FlowStyle
		}
		// List items omit their empty fields: a table entry prints only
		// what applies to it.
		for i := range v.Len() {
			item, err := yamlNode(fmt.Sprintf("%s[%d]", path, i), v.Index(i), true)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, item)
		}
		return n, nil
	case reflect.Float64:
		return scalar(v.Float())
	}
	return scalar(v.Interface())
}

func scalar(v any) (*yaml.Node, error) {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	return &n, nil
}

// formatDuration is time.Duration.String without zero trailing units:
// "24h", "1m", "1h30m", "5ms".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// RedactURL returns a PostgreSQL connection string with its passwords
// replaced by "*****": the password of a URL's user info and its password
// and sslpassword query parameters, or password= and sslpassword= in a
// keyword/value string. A URL that does not parse is replaced whole.
func RedactURL(s string) string {
	if !strings.Contains(s, "://") {
		// keyword/value form: host=db password='x y' dbname=crm
		re := regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)`)
		return re.ReplaceAllString(s, "${1}"+redacted)
	}
	u, err := url.Parse(s)
	if err != nil {
		return redacted
	}
	// url.URL escapes '*' in user info, so mark the password with a
	// placeholder that needs no escaping and swap it afterwards.
	const mark = "rowcastredacted"
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), mark)
		}
	}
	if u.RawQuery != "" {
		params := strings.Split(u.RawQuery, "&")
		for i, p := range params {
			k, _, _ := strings.Cut(p, "=")
			if name, err := url.QueryUnescape(k); err != nil || strings.HasSuffix(strings.ToLower(name), "password") {
				params[i] = k + "=" + mark
			}
		}
		u.RawQuery = strings.Join(params, "&")
	}
	out := u.String()
	if strings.Contains(out, mark) {
		out = strings.ReplaceAll(out, ":"+mark+"@", ":"+redacted+"@")
		out = strings.ReplaceAll(out, "="+mark, "="+redacted)
	}
	return out
}
