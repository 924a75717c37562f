"""deploy/kubernetes: every manifest valid against Kubernetes' own schemas (kubernetes-validate,
strict: an unknown or misplaced field fails), the ServiceMonitor (a CRD, outside those schemas)
checked field by field, and the manifests consistent with each other and with Tollgate: the
selectors find the pods, the probes ask Tollgate's own health routes on its port, the grace period
covers the preStop pause and the request deadline, and the ConfigMap and Secret together are a
configuration `tollgate config` accepts, with no variable it does not know."""

import json
import os
import subprocess
import unittest
from pathlib import Path

import kubernetes_validate
import yaml

from helpers import ROOT, TARGET

MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33"
# Tollgate's longest request (crates/tollgate/src/http/deadline.rs, REQUEST_DEADLINE).
REQUEST_DEADLINE_SECONDS = 25
LABEL = {"app.kubernetes.io/name": "tollgate"}


def documents():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    return kustomization, {name: yaml.safe_load((MANIFESTS / name).read_text()) for name in kustomization["resources"]}


class KubernetesManifests(unittest.TestCase):
    def setUp(self):
        self.kustomization, self.resources = documents()
        self.by_kind = {doc["kind"]: doc for doc in self.resources.values()}

    def test_kustomize_lists_every_manifest(self):
        on_disk = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
        self.assertEqual(set(self.kustomization["resources"]), on_disk)

    def test_each_manifest_is_valid_for_kubernetes(self):
        for name, doc in self.resources.items():
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue
            with self.subTest(name):
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        # The validator fails what it should: an unknown field in a container.
        broken = json.loads(json.dumps(self.by_kind["Deployment"]))
        broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
        with self.assertRaises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)

    def test_the_service_monitor(self):
        monitor = self.by_kind["ServiceMonitor"]
        self.assertEqual(monitor["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual(monitor["spec"]["selector"]["matchLabels"], self.by_kind["Service"]["metadata"]["labels"])
        service_ports = {p["name"] for p in self.by_kind["Service"]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            self.assertIn(endpoint["port"], service_ports)
            self.assertEqual(endpoint["path"], "/metrics")

    def test_the_pieces_fit_together_and_fit_tollgate(self):
        deployment, service, budget = self.by_kind["Deployment"], self.by_kind["Service"], self.by_kind["PodDisruptionBudget"]
        pod = deployment["spec"]["template"]
        self.assertEqual(deployment["spec"]["selector"]["matchLabels"], LABEL)
        self.assertEqual(pod["metadata"]["labels"], LABEL)
        self.assertEqual(service["spec"]["selector"], LABEL)
        self.assertEqual(budget["spec"]["selector"]["matchLabels"], LABEL)
        self.assertGreaterEqual(deployment["spec"]["replicas"], 3)
        self.assertEqual(deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0)

        container = pod["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        config = self.by_kind["ConfigMap"]["data"]
        self.assertEqual(ports["http"], 3000, "the image's PORT")
        self.assertEqual(ports["metrics"], int(config["METRICS_ADDR"].rsplit(":", 1)[1]))
        for port in service["spec"]["ports"]:
            self.assertIn(port["targetPort"], ports)
        self.assertEqual(self.by_kind["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["name"], "http",
                         "the Ingress never exposes /metrics")
        self.assertEqual((container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]), ("/readyz", "/healthz"))
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        self.assertGreater(pod["spec"]["terminationGracePeriodSeconds"], pause + REQUEST_DEADLINE_SECONDS)
        self.assertEqual(pod["spec"]["securityContext"]["runAsUser"], 65532, "the image's nonroot")

    def test_the_configuration_is_one_tollgate_accepts(self):
        env = {"PATH": os.environ["PATH"], **self.by_kind["ConfigMap"]["data"], **self.by_kind["Secret"]["stringData"]}
        done = subprocess.run([str(TARGET / "debug" / "tollgate"), "config", "--json"], env=env, capture_output=True, text=True, timeout=30,
                              cwd="/tmp")
        shown = json.loads(done.stdout)
        self.assertEqual((done.returncode, shown["errors"]), (0, []), done.stderr)
        for name in env.keys() - {"PATH"}:
            self.assertEqual(shown["variables"][name]["source"], "env", f"{name} is a variable Tollgate reads")
        self.assertNotIn("replace-me", done.stdout, "secrets are not printed")


if __name__ == "__main__":
    unittest.main()
