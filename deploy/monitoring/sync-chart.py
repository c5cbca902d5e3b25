"""Writes the chart's PrometheusRule and dashboard ConfigMap templates from
skylet-rules.yaml and skylet-dashboard.json (run after changing either;
tests/monitoring.rs fails while they differ).

    python3 deploy/monitoring/sync-chart.py
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE.parent / "helm" / "skylet" / "templates"

RULE_HEAD = """{{- /*
A PrometheusRule (prometheus-operator) with the groups of
deploy/monitoring/skylet-rules.yaml, written by
deploy/monitoring/sync-chart.py; tests/monitoring.rs keeps the two equal.
Off by default (the CRD must be installed):

  monitoring:
    prometheusRule:
      enabled: true
      labels: {release: kube-prometheus-stack}   # what the operator selects
    costBudget:
      dollarsPerDay: 100                 # every namespace (default 100)
      namespaces: {team-a: 20}           # per namespace where it differs
*/ -}}
{{- $m := .Values.monitoring | default dict }}
{{- $rule := $m.prometheusRule | default dict }}
{{- if $rule.enabled }}
{{- $budget := $m.costBudget | default dict }}
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: {{ include "skylet.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "skylet.labels" . | nindent 4 }}
    {{- with $rule.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  groups:
"""

BUDGETS = """  - name: skylet.budgets
    rules:
    - record: skylet:cost_budget_default_dollars:1d
      expr: vector({{ $budget.dollarsPerDay | default 100 }})
    {{- range $ns, $dollars := $budget.namespaces }}
    - record: skylet:namespace_cost_budget_dollars:1d
      expr: vector({{ $dollars }})
      labels: {namespace: {{ $ns | quote }}}
    {{- end }}
"""

DASHBOARD_HEAD = """{{- /*
The Grafana dashboard deploy/monitoring/skylet-dashboard.json as a
ConfigMap that Grafana's dashboard sidecar (kube-prometheus-stack,
grafana/grafana with sidecar.dashboards.enabled) loads by its label
grafana_dashboard: "1"; written by deploy/monitoring/sync-chart.py,
tests/monitoring.rs keeps the two equal. Off by default:

  monitoring:
    dashboard:
      enabled: true
      namespace: monitoring      # where the sidecar looks (default: the release's)
      labels: {}                 # more labels
*/ -}}
{{- $m := .Values.monitoring | default dict }}
{{- $dash := $m.dashboard | default dict }}
{{- if $dash.enabled }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "skylet.name" . }}-dashboard
  namespace: {{ $dash.namespace | default .Release.Namespace }}
  labels:
    {{- include "skylet.labels" . | nindent 4 }}
    grafana_dashboard: "1"
    {{- with $dash.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
data:
  skylet.json: |-
"""


def indent(text: str, by: str) -> str:
    return "".join(by + line if line.strip() else line for line in text.splitlines(True))


def raw(text: str) -> str:
    """Text that helm prints as it is (a Go template raw string)."""
    if "`" in text:
        raise SystemExit("a backtick cannot go into a Go template raw string")
    return "{{ `" + text.rstrip("\n") + "` }}\n"


def main() -> None:
    rules = (HERE / "skylet-rules.yaml").read_text()
    body = rules[rules.index("groups:\n") + len("groups:\n") :]
    records = body[: body.index("# The cost budgets")]
    alerts = body[body.index("- name: skylet.alerts") :]
    rule = RULE_HEAD + raw(indent(records, "  ")) + BUDGETS + raw(indent(alerts, "  ")) + "{{- end }}\n"
    (TEMPLATES / "prometheusrule.yaml").write_text(rule)
    dashboard = (HERE / "skylet-dashboard.json").read_text()
    cm = DASHBOARD_HEAD + raw(indent(dashboard, "    ")) + "{{- end }}\n"
    (TEMPLATES / "grafana-dashboard.yaml").write_text(cm)


if __name__ == "__main__":
    main()
