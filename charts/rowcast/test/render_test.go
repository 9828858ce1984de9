// Package test renders the rowcast chart with helm for every
// ci/*-values.yaml and decodes each manifest strictly into the Kubernetes
// Go types, so a misspelt or misplaced field fails here rather than at
// `kubectl apply`; chart_test.go then checks what the chart promises.
//
// It is a module of its own so that the relay's module never depends on
// the Kubernetes API types.
package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart, from this package's directory.
const chartDir = ".."

// kubeVersion is the Kubernetes version the chart is rendered for: that of
// the k8s.io/api types it is decoded into. helm built with `go install`
// lacks the release build's flags and would otherwise assume 1.20, below
// the chart's kubeVersion.
const kubeVersion = "1.36.0"

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor
// (a CRD, with no type in k8s.io/api) that the chart may emit; a field the
// chart starts to emit must be added here, or decoding fails.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port              string           `json:"port"`
			Path              string           `json:"path"`
			Interval          string           `json:"interval"`
			ScrapeTimeout     string           `json:"scrapeTimeout"`
			HonorLabels       bool             `json:"honorLabels"`
			Relabelings       []map[string]any `json:"relabelings"`
			MetricRelabelings []map[string]any `json:"metricRelabelings"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// manifest is one rendered document: the template it came from, its text
// as helm printed it (without the "# Source:" line) and the object it
// decoded into.
type manifest struct {
	source string
	text   string
	obj    any
}

// newObject returns a pointer to the Go type of apiVersion/kind, or nil for
// a kind the chart is not expected to render.
func newObject(apiVersion, kind string) any {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}
	case "v1 Service":
		return &corev1.Service{}
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}
	case "v1 Pod":
		return &corev1.Pod{}
	case "batch/v1 Job":
		return &batchv1.Job{}
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "networking.k8s.io/v1 Ingress":
		return &networkingv1.Ingress{}
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &serviceMonitor{}
	}
	return nil
}

// helmBinary returns the helm to run: $HELM, or helm on PATH. Without
// one the test is skipped, unless CI=true, where it fails.
func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	if h, err := exec.LookPath("helm"); err == nil {
		return h
	}
	msg := "no helm binary: set HELM or put helm on PATH (.ci/run builds a pinned one)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// ciValues returns the chart's ci/*-values.yaml files.
func ciValues(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no ci/*-values.yaml in the chart")
	}
	return files
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// render runs `helm template` with one values file and decodes every
// manifest strictly: an unknown or duplicated field, or an unknown kind,
// fails the test.
func render(t *testing.T, helm, valuesFile string) []manifest {
	t.Helper()
	cmd := exec.Command(helm, "template", "rowcast", chartDir, "--namespace", "rowcast",
		"--kube-version", kubeVersion, "--values", valuesFile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template --values %s: %v\n%s", valuesFile, err, stderr.String())
	}
	var ms []manifest
	for _, doc := range docSeparator.Split(string(out), -1) {
		m, ok, err := decode(doc)
		if err != nil {
			t.Fatalf("%s: %v\n%s", m.source, err, doc)
		}
		if ok {
			ms = append(ms, m)
		}
	}
	if len(ms) == 0 {
		t.Fatalf("helm template --values %s rendered nothing", valuesFile)
	}
	return ms
}

// decode decodes one document; ok is false for an empty one.
func decode(doc string) (m manifest, ok bool, err error) {
	text := strings.TrimLeft(doc, "\n")
	if rest, found := strings.CutPrefix(text, "# Source: "); found {
		m.source, text, _ = strings.Cut(rest, "\n")
	}
	m.text = text
	j, err := yaml.YAMLToJSONStrict([]byte(text))
	if err != nil {
		return m, false, fmt.Errorf("not YAML: %w", err)
	}
	if string(bytes.TrimSpace(j)) == "null" {
		return m, false, nil
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return m, false, fmt.Errorf("no apiVersion and kind: %w", err)
	}
	if tm.Kind == "Secret" {
		return m, false, fmt.Errorf("a Secret is rendered; the chart must create none (secrets come from existingSecret)")
	}
	m.obj = newObject(tm.APIVersion, tm.Kind)
	if m.obj == nil {
		return m, false, fmt.Errorf("unexpected kind %s %s", tm.APIVersion, tm.Kind)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(m.obj); err != nil {
		return m, false, fmt.Errorf("%s %s does not decode strictly: %w", tm.APIVersion, tm.Kind, err)
	}
	return m, true, nil
}

// TestDecodeRefusesUnknownFields checks the decoder itself: a field the
// Kubernetes type lacks, and a kind the chart should not render, fail.
func TestDecodeRefusesUnknownFields(t *testing.T) {
	good := "# Source: rowcast/templates/x.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n"
	if _, ok, err := decode(good); err != nil || !ok {
		t.Fatalf("decode(good) = %v, %v", ok, err)
	}
	for name, doc := range map[string]string{
		"unknown field":    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  lables: {a: b}\n",
		"duplicate field":  "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  name: y\n",
		"Secret":           "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n",
		"ServiceMonitor":   "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: x\nspec:\n  endpoints:\n    - port: http\n      scheme: https\n",
		"deployment field": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  template:\n    spec:\n      containers:\n        - name: a\n          readinesProbe: {}\n",
	} {
		if _, _, err := decode(doc); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}
