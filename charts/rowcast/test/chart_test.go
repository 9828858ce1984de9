package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// nonrootUID is the uid of the distroless nonroot image the relay runs in.
const nonrootUID = 65532

// values is the part of a ci/*-values.yaml file that says what must be
// rendered.
type values struct {
	ReplicaCount *int `json:"replicaCount"`
	InstallJob   struct {
		Enabled bool `json:"enabled"`
	} `json:"installJob"`
	Autoscaling struct {
		Enabled     bool `json:"enabled"`
		MinReplicas int  `json:"minReplicas"`
	} `json:"autoscaling"`
	Dashboard struct {
		Enabled bool `json:"enabled"`
	} `json:"dashboard"`
	NetworkPolicy struct {
		Enabled bool `json:"enabled"`
	} `json:"networkPolicy"`
	Metrics struct {
		ServiceMonitor struct {
			Enabled bool `json:"enabled"`
		} `json:"serviceMonitor"`
	} `json:"metrics"`
	TopologySpreadConstraints []any `json:"topologySpreadConstraints"`
}

// rendered is one rendering of the chart, sorted by kind.
type rendered struct {
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	configMaps      []manifest // *corev1.ConfigMap, with their text
	jobs            []*batchv1.Job
	pdbs            []*policyv1.PodDisruptionBudget
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	networkPolicies []*networkingv1.NetworkPolicy
	serviceMonitors []*serviceMonitor
	pods            []*corev1.Pod
}

func sortByKind(ms []manifest) rendered {
	var r rendered
	for _, m := range ms {
		switch o := m.obj.(type) {
		case *appsv1.Deployment:
			r.deployments = append(r.deployments, o)
		case *corev1.Service:
			r.services = append(r.services, o)
		case *corev1.ConfigMap:
			r.configMaps = append(r.configMaps, m)
		case *batchv1.Job:
			r.jobs = append(r.jobs, o)
		case *policyv1.PodDisruptionBudget:
			r.pdbs = append(r.pdbs, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpas = append(r.hpas, o)
		case *networkingv1.NetworkPolicy:
			r.networkPolicies = append(r.networkPolicies, o)
		case *serviceMonitor:
			r.serviceMonitors = append(r.serviceMonitors, o)
		case *corev1.Pod:
			r.pods = append(r.pods, o)
		}
	}
	return r
}

// configMap returns the rendered ConfigMap named name, or nil.
func (r rendered) configMap(name string) (*corev1.ConfigMap, string) {
	for _, m := range r.configMaps {
		if cm := m.obj.(*corev1.ConfigMap); cm.Name == name {
			return cm, m.text
		}
	}
	return nil, ""
}

// TestChart renders the chart with every ci/*-values.yaml, decodes every
// manifest strictly (render) and checks what issue 14 asks of it.
func TestChart(t *testing.T) {
	helm := helmBinary(t)
	rowcast := relayBinary(t)
	for _, file := range ciValues(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			var v values
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
			r := sortByKind(render(t, helm, file))
			checkDeployment(t, r, v)
			checkConfig(t, r, rowcast)
			checkInstallJob(t, r, v)
			checkReplicasAndPDB(t, r, v)
			checkServiceAndMonitor(t, r, v)
			checkNetworkPolicy(t, r, v)
			checkDashboard(t, r, v)
			if len(r.pods) != 1 || r.pods[0].Annotations["helm.sh/hook"] != "test" {
				t.Errorf("want one helm test pod, got %d", len(r.pods))
			}
		})
	}
}

func checkDeployment(t *testing.T, r rendered, v values) {
	t.Helper()
	if len(r.deployments) != 1 {
		t.Fatalf("want 1 Deployment, got %d", len(r.deployments))
	}
	d := r.deployments[0]
	s := d.Spec.Strategy
	if s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil {
		t.Fatalf("strategy = %+v, want RollingUpdate", s)
	}
	if mu := s.RollingUpdate.MaxUnavailable; mu == nil || mu.String() != "0" {
		t.Errorf("maxUnavailable = %v, want 0", mu)
	}
	if ms := s.RollingUpdate.MaxSurge; ms == nil || ms.String() == "0" || ms.String() == "0%" {
		t.Errorf("maxSurge = %v, want more than 0 (maxUnavailable is 0)", ms)
	}

	pod := d.Spec.Template
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("the Deployment's selector %v does not select its pods %v (%v)", d.Spec.Selector, pod.Labels, err)
	}
	checkPodSecurity(t, "Deployment", pod.Spec)

	var relay *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == "rowcast" {
			relay = &pod.Spec.Containers[i]
		}
	}
	if relay == nil {
		t.Fatal("no rowcast container")
	}
	for name, p := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{
		"liveness":  {relay.LivenessProbe, "/healthz"},
		"readiness": {relay.ReadinessProbe, "/readyz"},
		"startup":   {relay.StartupProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe = %+v, want an httpGet of %s", name, p.probe, p.path)
		}
	}
	if !slices.ContainsFunc(relay.Env, func(e corev1.EnvVar) bool {
		return e.Name == "ROWCAST_DATABASE_URL" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
	}) {
		t.Error("ROWCAST_DATABASE_URL does not come from a Secret")
	}

	// checksum/config is the sha256 of the ConfigMap as rendered; helm
	// prints each manifest trimmed, followed by one newline.
	cm, text := r.configMap(d.Name)
	if cm == nil {
		t.Fatalf("no ConfigMap %s", d.Name)
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(text) + "\n"))
	if got, want := pod.Annotations["checksum/config"], hex.EncodeToString(sum[:]); got != want {
		t.Errorf("checksum/config = %q, want the ConfigMap's sha256 %q", got, want)
	}

	tsc := pod.Spec.TopologySpreadConstraints
	if len(tsc) == 0 {
		t.Error("no topologySpreadConstraints")
	}
	for _, c := range tsc {
		sel, err := metav1.LabelSelectorAsSelector(c.LabelSelector)
		if err != nil || c.LabelSelector == nil || !sel.Matches(labels.Set(pod.Labels)) {
			t.Errorf("topology spread over %s: selector %v does not select the relay pods (%v)", c.TopologyKey, c.LabelSelector, err)
		}
	}

	if len(v.TopologySpreadConstraints) == 0 {
		// The chart's default: by zone and by node, never blocking.
		var keys []string
		for _, c := range tsc {
			keys = append(keys, c.TopologyKey)
			if c.WhenUnsatisfiable != corev1.ScheduleAnyway {
				t.Errorf("topology spread over %s is %s, want ScheduleAnyway", c.TopologyKey, c.WhenUnsatisfiable)
			}
		}
		if want := []string{"topology.kubernetes.io/zone", "kubernetes.io/hostname"}; !slices.Equal(keys, want) {
			t.Errorf("default topology spread over %v, want %v", keys, want)
		}
	}

	grace := 10 * time.Second
	var cfg struct {
		Shutdown struct {
			Grace string `json:"grace"`
		} `json:"shutdown"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["rowcast.yaml"]), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Shutdown.Grace != "" {
		if grace, err = time.ParseDuration(cfg.Shutdown.Grace); err != nil {
			t.Fatal(err)
		}
	}
	if tg := pod.Spec.TerminationGracePeriodSeconds; tg == nil || time.Duration(*tg)*time.Second <= grace {
		t.Errorf("terminationGracePeriodSeconds = %v, want more than shutdown.grace %s", tg, grace)
	}
}

// checkPodSecurity checks the restricted security context of a pod and all
// its containers.
func checkPodSecurity(t *testing.T, what string, spec corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != nonrootUID ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext = %+v, want runAsNonRoot, runAsUser %d, seccomp RuntimeDefault", what, psc, nonrootUID)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: the pod mounts a service account token", what)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 ||
			sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: container %s securityContext = %+v, want readOnlyRootFilesystem, no privilege escalation, runAsNonRoot, capabilities drop [ALL], seccomp RuntimeDefault", what, c.Name, sc)
		}
	}
}

// relayBinary returns a rowcast binary to check the rendered configuration
// with: $ROWCAST_BIN, or one built from the repository. Without Go's
// toolchain or the repository the check is skipped.
func relayBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("ROWCAST_BIN"); b != "" {
		return b
	}
	bin := filepath.Join(t.TempDir(), "rowcast")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/rowcast")
	cmd.Dir = filepath.Join(chartDir, "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building rowcast from %s: %v\n%s", cmd.Dir, err, out)
	}
	return bin
}

// checkConfig runs `rowcast config print` on every rendered rowcast.yaml,
// with the secrets the pods get from the Secret: the relay refuses unknown
// keys and invalid values, and needs no database for it.
func checkConfig(t *testing.T, r rendered, rowcast string) {
	t.Helper()
	n := 0
	for _, m := range r.configMaps {
		cm := m.obj.(*corev1.ConfigMap)
		text, ok := cm.Data["rowcast.yaml"]
		if !ok {
			continue
		}
		n++
		file := filepath.Join(t.TempDir(), "rowcast.yaml")
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(rowcast, "config", "print", "--config", file)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
			"ROWCAST_DATABASE_URL=postgres://rowcast@db.example.com:5432/crm"}
		if env := r.deployments[0].Spec.Template.Spec.Containers[0].Env; slices.ContainsFunc(env, func(e corev1.EnvVar) bool { return e.Name == "ROWCAST_AUTH_JWT_SECRET" }) {
			cmd.Env = append(cmd.Env, "ROWCAST_AUTH_JWT_SECRET=0123456789abcdef0123456789abcdef")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("ConfigMap %s: rowcast config print refuses it: %v\n%s\n%s", cm.Name, err, out, text)
		}
	}
	if n == 0 {
		t.Error("no ConfigMap holds rowcast.yaml")
	}
}

func checkInstallJob(t *testing.T, r rendered, v values) {
	t.Helper()
	if !v.InstallJob.Enabled {
		if len(r.jobs) != 0 {
			t.Errorf("installJob disabled, but %d Jobs rendered", len(r.jobs))
		}
		return
	}
	if len(r.jobs) != 1 {
		t.Fatalf("want 1 install Job, got %d", len(r.jobs))
	}
	j := r.jobs[0]
	if got := j.Annotations["helm.sh/hook"]; got != "pre-install,pre-upgrade,pre-rollback" {
		t.Errorf("Job hook = %q, want pre-install,pre-upgrade,pre-rollback", got)
	}
	policy := strings.Split(j.Annotations["helm.sh/hook-delete-policy"], ",")
	for _, want := range []string{"before-hook-creation", "hook-succeeded"} {
		if !slices.Contains(policy, want) {
			t.Errorf("Job hook-delete-policy %v lacks %s", policy, want)
		}
	}
	checkPodSecurity(t, "install Job", j.Spec.Template.Spec)
	if c := j.Spec.Template.Spec.Containers; len(c) != 1 || len(c[0].Args) == 0 || c[0].Args[0] != "install" {
		t.Errorf("the Job's container does not run install: %+v", c)
	}

	// Its ConfigMap must be a hook created before it: hooks run before the
	// release's own ConfigMap exists (or is updated).
	var cmName string
	for _, vol := range j.Spec.Template.Spec.Volumes {
		if vol.ConfigMap != nil {
			cmName = vol.ConfigMap.Name
		}
	}
	cm, _ := r.configMap(cmName)
	if cm == nil {
		t.Fatalf("the Job mounts ConfigMap %q, which is not rendered", cmName)
	}
	if cm.Annotations["helm.sh/hook"] != j.Annotations["helm.sh/hook"] {
		t.Errorf("the Job's ConfigMap %s is not a %s hook: %v", cm.Name, j.Annotations["helm.sh/hook"], cm.Annotations)
	}
	if weight(t, cm.Annotations) >= weight(t, j.Annotations) {
		t.Errorf("the Job's ConfigMap has hook weight %d, not below the Job's %d", weight(t, cm.Annotations), weight(t, j.Annotations))
	}
}

func weight(t *testing.T, annotations map[string]string) int {
	t.Helper()
	var w int
	if s := annotations["helm.sh/hook-weight"]; s != "" {
		if err := json.Unmarshal([]byte(s), &w); err != nil {
			t.Fatalf("hook weight %q: %v", s, err)
		}
	}
	return w
}

func checkReplicasAndPDB(t *testing.T, r rendered, v values) {
	t.Helper()
	d := r.deployments[0]
	replicas := 2 // values.yaml's replicaCount
	if v.ReplicaCount != nil {
		replicas = *v.ReplicaCount
	}
	if v.Autoscaling.Enabled {
		replicas = v.Autoscaling.MinReplicas
		if len(r.hpas) != 1 {
			t.Fatalf("autoscaling enabled, want 1 HPA, got %d", len(r.hpas))
		}
		h := r.hpas[0]
		if ref := h.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != d.Name {
			t.Errorf("HPA targets %+v, want the Deployment %s", ref, d.Name)
		}
		if d.Spec.Replicas != nil {
			t.Error("the Deployment sets replicas while the HPA scales it")
		}
	} else if len(r.hpas) != 0 {
		t.Errorf("autoscaling disabled, but %d HPAs rendered", len(r.hpas))
	}
	if replicas <= 1 {
		if len(r.pdbs) != 0 {
			t.Errorf("%d replica(s), but a PodDisruptionBudget is rendered", replicas)
		}
		return
	}
	if len(r.pdbs) != 1 {
		t.Fatalf("%d replicas, want 1 PodDisruptionBudget, got %d", replicas, len(r.pdbs))
	}
	p := r.pdbs[0]
	if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
		t.Errorf("PDB sets neither or both of minAvailable and maxUnavailable: %+v", p.Spec)
	}
	sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the PDB's selector %v does not select the relay pods (%v)", p.Spec.Selector, err)
	}
}

func checkServiceAndMonitor(t *testing.T, r rendered, v values) {
	t.Helper()
	if len(r.services) != 1 {
		t.Fatalf("want 1 Service, got %d", len(r.services))
	}
	svc := r.services[0]
	pod := r.deployments[0].Spec.Template
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
		t.Errorf("the Service's selector %v does not select the relay pods", svc.Spec.Selector)
	}
	if !v.Metrics.ServiceMonitor.Enabled {
		if len(r.serviceMonitors) != 0 {
			t.Errorf("serviceMonitor disabled, but %d rendered", len(r.serviceMonitors))
		}
		return
	}
	if len(r.serviceMonitors) != 1 {
		t.Fatalf("want 1 ServiceMonitor, got %d", len(r.serviceMonitors))
	}
	sm := r.serviceMonitors[0]
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("the ServiceMonitor's selector %v does not select the Service (%v)", sm.Spec.Selector, err)
	}
	for _, ep := range sm.Spec.Endpoints {
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) || ep.Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoint %s%s is not a /metrics port of the Service", ep.Port, ep.Path)
		}
	}
}

func checkNetworkPolicy(t *testing.T, r rendered, v values) {
	t.Helper()
	if !v.NetworkPolicy.Enabled {
		if len(r.networkPolicies) != 0 {
			t.Errorf("networkPolicy disabled, but %d rendered", len(r.networkPolicies))
		}
		return
	}
	if len(r.networkPolicies) != 1 {
		t.Fatalf("want 1 NetworkPolicy, got %d", len(r.networkPolicies))
	}
	np := r.networkPolicies[0]
	pod := r.deployments[0].Spec.Template
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("the NetworkPolicy's podSelector %v does not select the relay pods (%v)", np.Spec.PodSelector, err)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
		t.Errorf("policyTypes = %v, want Ingress and Egress", np.Spec.PolicyTypes)
	}
	in := func(port string) bool {
		return slices.ContainsFunc(np.Spec.Ingress, func(rule networkingv1.NetworkPolicyIngressRule) bool {
			return slices.ContainsFunc(rule.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port != nil && p.Port.String() == port })
		})
	}
	if !in("http") {
		t.Error("the NetworkPolicy does not let clients reach the http port")
	}
	if slices.ContainsFunc(pod.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" }) && !in("metrics") {
		t.Error("the NetworkPolicy does not let Prometheus reach the metrics port")
	}
	out := func(port string) bool {
		return slices.ContainsFunc(np.Spec.Egress, func(rule networkingv1.NetworkPolicyEgressRule) bool {
			return slices.ContainsFunc(rule.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port != nil && p.Port.String() == port })
		})
	}
	if !out("53") {
		t.Error("the NetworkPolicy blocks DNS")
	}
	if !out("5432") && !out("6543") {
		t.Error("the NetworkPolicy blocks PostgreSQL")
	}
	cm, _ := r.configMap(r.deployments[0].Name)
	if strings.Contains(cm.Data["rowcast.yaml"], "jwks_url:") && !out("443") {
		t.Error("config.auth.jwks_url is set, but the NetworkPolicy blocks HTTPS")
	}
}

func checkDashboard(t *testing.T, r rendered, v values) {
	t.Helper()
	var found []*corev1.ConfigMap
	for _, m := range r.configMaps {
		if cm := m.obj.(*corev1.ConfigMap); cm.Labels["grafana_dashboard"] != "" {
			found = append(found, cm)
		}
	}
	if !v.Dashboard.Enabled {
		if len(found) != 0 {
			t.Errorf("dashboard disabled, but %d dashboard ConfigMaps rendered", len(found))
		}
		return
	}
	if len(found) != 1 {
		t.Fatalf("dashboard enabled, want 1 ConfigMap labelled grafana_dashboard, got %d", len(found))
	}
	cm := found[0]
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("grafana_dashboard label = %q, want \"1\"", cm.Labels["grafana_dashboard"])
	}
	var dash struct {
		Title  string            `json:"title"`
		UID    string            `json:"uid"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["rowcast.json"]), &dash); err != nil {
		t.Fatalf("rowcast.json does not parse: %v", err)
	}
	if dash.UID != "rowcast" || dash.Title == "" || len(dash.Panels) == 0 {
		t.Errorf("dashboard uid %q, title %q, %d panels; want uid rowcast, a title and panels", dash.UID, dash.Title, len(dash.Panels))
	}
}
